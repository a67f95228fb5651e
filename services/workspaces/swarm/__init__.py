"""The Swarm backend (WORKSPACE_BACKEND=swarm): each workspace a one-replica
Docker Swarm service. `backend` holds the class (a DockerBackend whose
object hooks speak services and tasks); `service` translates the IdeSpec
into a service spec and reads tasks; `engine` the manager's service, task
and node calls; `settings` what only it reads."""
