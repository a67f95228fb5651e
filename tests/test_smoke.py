from tests.support.app import auth, register


async def test_register_then_profile(client):
    data = await register(client, email="Smoke@Example.com")
    assert data["user"]["email"] == "Smoke@Example.com"
    profile = await client.get("/api/users/profile/", headers=auth(data))
    assert profile.status_code == 200
    assert profile.json()["id"] == data["user"]["id"]
