"""Private plumbing in the real stack: the modes of sockets, shared memory segments and
recordings (whatever the umask of what starts the stack), the checks on a socket's path before
it is replaced, and the optional SHM_GROUP that may read the shared memory."""

from __future__ import annotations

import grp
import os
import re
import signal
import stat
from pathlib import Path

import pytest

from streamer.media import shm
from tests.harness import stop_stack, wait_until


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_sockets_segments_and_recordings_are_private(env, start, workdir):
    segments_before = set(Path("/dev/shm").glob("shmpipe.*"))
    env.update(ENABLE_VIDEO="1", ENABLE_IMAGES="1")
    # A careless umask in whatever starts the stack: the workers set their own.
    drone = start("streamer.drone", env, prefix=("sh", "-c", 'umask 000; exec "$@"', "sh"))
    try:
        drone.wait_for("stack is up")
        ssd = Path(env["SSD_PATH"])
        wait_until(
            lambda: list(ssd.glob("*/image_*.jpg")) and list(ssd.glob("*/video_*.mp4")), 20, "recordings"
        )
        for socket_path in (env["SHM_RECORDER_SOCKET"], env["SHM_STREAM_SOCKET"]):
            assert stat.S_ISSOCK(os.lstat(socket_path).st_mode)
            assert mode(socket_path) == 0o600, f"{socket_path}: {mode(socket_path):o}"
        ours = set(Path("/dev/shm").glob("shmpipe.*")) - segments_before
        assert len(ours) >= 2, ours
        assert {p.name: f"{mode(p):o}" for p in ours} == {p.name: "600" for p in ours}
        made = [ssd, *ssd.rglob("*")]
        assert len(made) >= 4
        for path in made:
            if path.is_symlink():
                continue
            m = mode(path)
            assert not m & 0o022 and not m & 0o007, f"{path}: {m:o}"  # umask 027
    finally:
        stop_stack(drone)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a file owned by another user")
@pytest.mark.parametrize("kind", ["file", "link"])
def test_a_socket_path_held_by_another_user_is_refused_not_removed(env, start, workdir, kind):
    path = Path(env["SHM_STREAM_SOCKET"])
    target = workdir / "precious"
    target.write_text("not yours")
    if kind == "file":
        path.write_text("planted")
    else:
        path.symlink_to(target)
    os.lchown(path, 65534, 65534)
    try:
        feeder = start("streamer.feeder", env)
        assert feeder.wait(30) == 1
        assert re.search(rf"{path}: a {kind} owned by uid 65534 is in the way", feeder.output), feeder.output
        assert os.path.lexists(path) and target.read_text() == "not yours"
    finally:
        path.unlink()


def test_socket_checks(tmp_path: Path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # writable by anyone, not sticky
    with pytest.raises(shm.UntrustedPath, match="writable by others without the sticky bit"):
        shm.remove_stale_socket(str(shared / "a.sock"))
    shared.chmod(0o1777)  # as /tmp
    (shared / "a.sock").write_text("")
    assert shm.remove_stale_socket(str(shared / "a.sock"))
    with pytest.raises(shm.UntrustedPath, match="does not exist"):
        shm.check_socket_path(str(tmp_path / "nowhere" / "a.sock"))


def test_an_optional_group_may_read_the_shared_memory(env, start):
    env["SHM_GROUP"] = "daemon"
    daemon = grp.getgrnam("daemon").gr_gid
    feeder = start("streamer.feeder", env)
    feeder.wait_for("shared memory readable by group")
    segments = shm.segments_of([feeder.popen.pid])
    assert len(segments) == 2
    for path in (*map(Path, (env["SHM_RECORDER_SOCKET"], env["SHM_STREAM_SOCKET"])), *segments):
        info = os.lstat(path)
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, daemon), path
    feeder.signal(signal.SIGTERM)
    assert feeder.wait() == 0
