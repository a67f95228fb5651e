"""The README's promises: its settings table matches the code."""
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_settings_table_in_readme_is_current():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", readme, re.S)
    assert match, "README lost its settings table markers"
    generated = subprocess.run([sys.executable, "server.py", "settings-table"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    assert match.group(1).strip() == generated, "regenerate with: python server.py settings-table"
