"""The GPU/publishing workflow and the `base` profile's fail-fast path."""
import subprocess
import sys

import pytest
import yaml

from xlprune_lib.config import UserError, repo_root


@pytest.fixture(scope="module")
def workflow():
    return yaml.safe_load((repo_root() / ".github" / "workflows" / "book.yml").read_text())


def _runs(job) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_cpu_job_runs_the_readme_test_command(workflow):
    job = workflow["jobs"]["test"]
    assert "make test" in _runs(job) and "gpu" not in str(job["runs-on"])
    assert "make test" in (repo_root() / ".ci" / "run").read_text()


def test_gpu_job_executes_base_and_publishes_the_html(workflow):
    job = workflow["jobs"]["book"]
    assert "gpu" in job["runs-on"] and "make book PROFILE=base" in _runs(job)
    pages = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-pages-artifact")]
    assert pages and pages[0]["with"]["path"] == "_build/html"
    deploy = workflow["jobs"]["publish"]
    assert deploy["needs"] == "book" and any("deploy-pages" in str(s.get("uses")) for s in deploy["steps"])
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}


def test_base_book_without_hub_stops_before_any_chapter(unreachable_hub, tmp_path):
    from xlprune_lib.book.build import execute

    with pytest.raises(UserError, match="model hub"):
        execute("base", out_dir=tmp_path / "chapters")
    assert unreachable_hub == [("127.0.0.1", 9)]                         # one probe, no library retries
    assert not list((tmp_path / "chapters").glob("*.ipynb"))


def test_base_book_cli_is_one_line_and_exit_2(tmp_path):
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "xlprune_lib.book", "execute", "--profile", "base"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=repo_root())
    assert done.returncode == 2 and "model hub" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
