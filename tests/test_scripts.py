"""The newcomer's scripts say what failed and what to do (scripts/bootstrap, develop).

The scripts run for real in bash; what they call that would touch the machine
(apt-get, id) are stand-in programs first on ``PATH`` that answer as Debian's do,
so nothing is installed and no network is used.
"""

from collections.abc import Sequence
import os
from pathlib import Path
import shutil
import socket
import stat
import subprocess

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP = ROOT / "scripts" / "bootstrap"
BASH = shutil.which("bash") or "/bin/bash"

# What Debian 12's apt-get 2.6 prints, exit 100, while another apt-get or
# unattended-upgrades holds dpkg's frontend lock.
LOCK_HELD = """\
E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)
N: Be aware that removing the lock file is not a solution and may break your system.
E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another process using it?"""


def program(directory: Path, name: str, script: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """A directory first on PATH, with ``id`` saying root; add apt-get per test."""
    directory = tmp_path / "bin"
    directory.mkdir()
    program(directory, "id", "echo 0")
    return directory


def bootstrap(
    fake_bin: Path, command: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in bash with scripts/bootstrap's functions (nothing else runs)."""
    environment = {
        **os.environ,
        "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
        "XIAOZHI_BOOTSTRAP_LIBRARY": "1",
        **(env or {}),
    }
    return subprocess.run(
        [BASH, "-c", f'source "{BOOTSTRAP}"; {command}'],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )


def apt_get(fake_bin: Path, log: Path, answers: Sequence[tuple[int, str]]) -> None:
    """An apt-get that logs its arguments and gives the scripted answers in turn.

    Once the answers are used up, the last one is repeated.
    """
    cases = "\n".join(
        f'  {i}) printf "%s\\n" "{text}" >&2; exit {status};;'
        for i, (status, text) in enumerate(answers)
    )
    last = len(answers) - 1
    program(
        fake_bin,
        "apt-get",
        f"""echo "$*" >> "{log}"
n=$(wc -l < "{log}"); n=$((n - 1)); [ "$n" -gt {last} ] && n={last}
case $n in
{cases}
esac""",
    )


def test_a_held_apt_lock_is_waited_for_then_named(
    fake_bin: Path, tmp_path: Path
) -> None:
    log = tmp_path / "apt.log"
    apt_get(fake_bin, log, [(100, LOCK_HELD)])

    done = bootstrap(
        fake_bin,
        "apt_install espeak-ng ffmpeg",
        {"APT_LOCK_WAIT_S": "2", "APT_RETRY_S": "1"},
    )

    assert done.returncode == 2, done.stderr
    assert "apt's lock is held by process 4242 (unattended-upgr)" in done.stderr
    assert "waiting up to 2 s for it to finish" in done.stderr
    assert (
        "error: apt's lock is still held by process 4242 (unattended-upgr) after 2 s"
        in done.stderr
    )
    assert "Wait for it to finish (or stop it), then run this again" in done.stderr
    # Asked at once, then after 1 s and 2 s; no update: the lock was the problem.
    assert log.read_text().splitlines() == ["install -y -qq espeak-ng ffmpeg"] * 3


def test_a_lock_released_while_waiting_lets_the_install_go_on(
    fake_bin: Path, tmp_path: Path
) -> None:
    log = tmp_path / "apt.log"
    apt_get(fake_bin, log, [(100, LOCK_HELD), (0, "")])

    done = bootstrap(
        fake_bin, "apt_install espeak-ng", {"APT_LOCK_WAIT_S": "30", "APT_RETRY_S": "1"}
    )

    assert done.returncode == 0, done.stderr
    assert "waiting up to 30 s" in done.stderr
    assert "error" not in done.stderr
    assert len(log.read_text().splitlines()) == 2


def test_a_failed_install_updates_the_lists_then_says_what_apt_said(
    fake_bin: Path, tmp_path: Path
) -> None:
    log = tmp_path / "apt.log"
    apt_get(fake_bin, log, [(100, "E: Unable to locate package espeak-ng")])

    done = bootstrap(fake_bin, "apt_install espeak-ng")

    assert done.returncode == 1
    assert log.read_text().splitlines() == [
        "install -y -qq espeak-ng",
        "update -qq",
    ]
    assert "updating apt's package lists and trying again" in done.stderr
    assert "error: 'apt-get update -qq' failed (exit 100):" in done.stderr
    assert "  E: Unable to locate package espeak-ng" in done.stderr


def test_without_root_it_says_what_to_run(fake_bin: Path, tmp_path: Path) -> None:
    program(fake_bin, "id", "echo 1000")
    log = tmp_path / "apt.log"
    apt_get(fake_bin, log, [(0, "")])

    done = bootstrap(fake_bin, "apt_install espeak-ng ffmpeg")

    assert done.returncode == 1
    assert "run 'sudo apt-get install espeak-ng ffmpeg'" in done.stderr
    assert not log.exists()


def test_missing_audio_tools_are_a_warning_that_says_what_breaks(
    fake_bin: Path, tmp_path: Path
) -> None:
    """ensure_audio_tools goes on (the venv is usable) but says what is missing."""
    log = tmp_path / "apt.log"
    apt_get(fake_bin, log, [(100, LOCK_HELD)])
    # command -v finds nothing: a PATH of the fake programs and the shell's tools only.
    tools = tmp_path / "tools"
    tools.mkdir()
    names = ("cat", "dirname", "grep", "head", "mktemp", "rm", "sed", "sleep", "tail")
    for name in (*names, "wc"):
        found = subprocess.run(
            ["bash", "-c", f"command -v {name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        (tools / name).symlink_to(found)

    done = bootstrap(
        fake_bin,
        "ensure_audio_tools; echo still-here",
        {"PATH": f"{fake_bin}{os.pathsep}{tools}", "APT_LOCK_WAIT_S": "0"},
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "still-here"
    assert "apt's lock is still held by process 4242" in done.stderr
    assert (
        "warning: without ffmpeg espeak-ng the audio tests fail, and the demo can"
        " neither speak nor hear" in done.stderr
    )


def test_develop_says_which_port_is_taken_and_how_to_pick_another(
    socket_enabled: None,
) -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = subprocess.run(
            [str(ROOT / "scripts" / "develop"), "--demo"],
            capture_output=True,
            text=True,
            env={**os.environ, "SETUP_PORT": str(port)},
            timeout=120,
            check=False,
        )

    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        f"error: port {port} is in use (another Home Assistant?): stop it, or run"
        " with SETUP_PORT=<another port>."
    )
