"""Recording switched at runtime and snapshots on demand, through the recorder's command channel
(``streamer.runtime.commands``) of the real stack: a stop finalises the open chunk, a start
opens a new session, a snapshot is a full-size JPEG on disk, also with recording off; bad
commands are refused; the operator's choice outlives a recorder restarted by the same
controller, not the controller. Files are checked with FFmpeg's tools."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamer import config
from streamer.runtime import commands
from streamer.storage import layout
from streamer.testing import Proc, wait_state
from tests.harness import TEST_FPS, TEST_HEIGHT, TEST_WIDTH, tmpfs, wait_until
from tests.media import decodes_cleanly, jpeg_size, video_info, wait_for_chunks
from tests.test_require_mount import require_root_file_system

OFF = {"video": False, "images": False}


def command_socket(env: dict[str, str]) -> str:
    return commands.socket_path(config.load(env))


def sessions(ssd: Path) -> list[Path]:
    return layout.sessions(ssd)


def latest(ssd: Path, link: str) -> Path:
    return (ssd / layout.LATEST_DIR / link).resolve()


def recorder_progress(
    env: dict[str, str],
    holds: Callable[[dict[str, Any]], bool],
    what: str,
    drone: Proc,
    pid: int | None = None,
) -> dict[str, Any]:
    """Wait until the recorder's latest progress report (as the controller publishes it)
    satisfies ``holds``; with ``pid``, a report of that recorder process."""

    def condition(current) -> bool:
        recorder = current.workers.get("recorder")
        return (
            recorder is not None
            and (pid is None or recorder.pid == pid)
            and bool(recorder.progress)
            and holds(recorder.progress)
        )

    return wait_state(env, condition, 20, what, drone).workers["recorder"].progress


def into_open_chunk(session: Path, seconds: int) -> None:
    """Wait until the open chunk holds about ``seconds`` of video, judged by the images
    finished since the last chunk was (one a second)."""
    images = len(list(session.glob("image_*.jpg")))
    wait_until(
        lambda: len(list(session.glob("image_*.jpg"))) >= images + seconds,
        20,
        f"{seconds} s into the open chunk",
    )


def finished_bytes(*folders: Path) -> int:
    return sum(
        p.stat().st_size for folder in folders for p in folder.iterdir() if p.suffix in (".mp4", ".jpg")
    )


def test_a_stop_finalises_the_open_chunk_and_a_start_opens_a_new_session(env, start):
    env.update(ENABLE_RTSP="0")
    ssd, path = Path(env["SSD_PATH"]), command_socket(env)
    drone = start("streamer.drone", env)
    drone.wait_for("recorder: receiving frames")
    session = wait_for_chunks(ssd, 1)
    into_open_chunk(session, 3)

    assert commands.request(path, "recording", **OFF) == {"ok": True, **OFF, "session": None, "state": "off"}
    # Answered once done: the open chunk is finished, whole, and latest_video.mp4 points at it.
    chunks = sorted(session.glob("video_*.mp4"))
    assert len(chunks) == 2, chunks
    assert latest(ssd, layout.LATEST_VIDEO) == chunks[-1]
    assert decodes_cleanly(chunks[-1]) == ""
    assert video_info(chunks[-1])[3] >= 2.0, video_info(chunks[-1])
    files = sorted(session.iterdir())
    frames = recorder_progress(env, lambda p: p["state"] == "off", "the recorder to report off", drone)[
        "frames"
    ]
    # Nothing more is recorded, while frames still count (the watchdog sees the recorder alive).
    off = recorder_progress(
        env, lambda p: p["frames"] >= frames + 2 * TEST_FPS, "two seconds of frames with recording off", drone
    )
    assert sorted(session.iterdir()) == files and sessions(ssd) == [session]
    assert off["idle"] is False and off["session"] is None and (off["video"], off["images"]) == (False, False)
    assert off["chunks"] == 2 and off["snapshots"] == len(list(session.glob("image_*.jpg")))
    assert off["bytes"] == finished_bytes(session)

    started = commands.request(path, "recording", video=True, images=True)
    assert started["state"] == "recording" and (started["video"], started["images"]) == (True, True)
    new = ssd / started["session"]
    assert sessions(ssd) == [session, new]  # a start is a new session
    wait_until(lambda: latest(ssd, layout.LATEST_VIDEO).parent == new, 20, "a chunk in the new session")
    assert decodes_cleanly(latest(ssd, layout.LATEST_VIDEO)) == ""
    assert latest(ssd, layout.LATEST_VIDEO).name == layout.VIDEO_PATTERN % 0
    recorder_progress(
        env,
        lambda p: p["state"] == "recording" and p["session"] == new.name and p["chunks"] >= 3,
        "the recorder to report the new session",
        drone,
    )
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0, drone.output
    assert sorted(session.iterdir()) == files  # the closed session was never written to again
    for chunk in sorted(new.glob("video_*.mp4")):
        assert decodes_cleanly(chunk) == "", chunk


def test_snapshots_are_full_size_jpegs_with_recording_off_and_on(env, start):
    """The recorder runs with both recordings off, counting frames (well past its stall limit
    nothing is restarted); snapshots go into a session of their own, then into the session
    being recorded. (Progress is reported every second: a stall limit of 2 s is tight.)"""
    env.update(ENABLE_RTSP="0", ENABLE_VIDEO="0", ENABLE_IMAGES="0", STALL_RECORDER_S="2")
    ssd, path = Path(env["SSD_PATH"]), command_socket(env)
    drone = start("streamer.drone", env)
    drone.wait_up()
    off = recorder_progress(
        env, lambda p: p["frames"] > 5 * TEST_FPS, "five seconds of frames with recording off", drone
    )
    assert off["state"] == "off" and off["idle"] is False and off["session"] is None
    assert sessions(ssd) == []

    first = commands.request(path, "snapshot")
    snapshot = Path(first["path"])
    assert snapshot.name == "snapshot_00000.jpg" and snapshot.parent.parent == ssd
    assert first["session"] == snapshot.parent.name
    assert (first["width"], first["height"]) == (TEST_WIDTH, TEST_HEIGHT) == jpeg_size(snapshot)
    second = commands.request(path, "snapshot")
    assert Path(second["path"]) == snapshot.with_name("snapshot_00001.jpg")
    assert jpeg_size(Path(second["path"])) == (TEST_WIDTH, TEST_HEIGHT)
    assert latest(ssd, layout.LATEST_IMAGE) == Path(second["path"])
    assert sorted(p.name for p in snapshot.parent.iterdir()) == ["snapshot_00000.jpg", "snapshot_00001.jpg"]
    counted = recorder_progress(env, lambda p: p["snapshots"] == 2, "two snapshots counted", drone)
    assert counted["bytes"] == finished_bytes(snapshot.parent) and counted["session"] is None

    started = commands.request(path, "recording", video=True)
    assert (started["state"], started["video"], started["images"]) == ("recording", True, False)
    recording = ssd / started["session"]
    assert recording != snapshot.parent
    third = commands.request(path, "snapshot")
    assert Path(third["path"]) == recording / "snapshot_00000.jpg"
    assert jpeg_size(Path(third["path"])) == (TEST_WIDTH, TEST_HEIGHT)
    wait_for_chunks(ssd, 1)
    assert latest(ssd, layout.LATEST_VIDEO).parent == recording
    state = wait_state(env, lambda s: s.state == "up", 5, "the stack", drone)
    assert state.restarts == [] and state.workers["recorder"].restarts == 0, state
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0, drone.output


def test_bad_commands_are_refused_and_change_nothing(env, start):
    env.update(ENABLE_VIDEO="0", ENABLE_IMAGES="0")
    ssd, path = Path(env["SSD_PATH"]), command_socket(env)
    feeder = start("streamer.feeder", env)
    feeder.wait_for("camera is delivering frames")
    recorder = start("streamer.recorder", env)
    recorder.wait_for("receiving frames")
    for line in (b"not json\n", b'["recording"]\n', b'{"video": true}\n'):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(path)
            client.sendall(line)
            answer = json.loads(client.makefile("rb").readline())
        assert answer["ok"] is False and answer["error"], (line, answer)
    refused = [
        (("bogus",), {}, "unknown command 'bogus'"),
        (("recording",), {"video": "yes"}, "video must be true, false or null"),
        (("recording",), {"images": 1}, "images must be true, false or null"),
        (("recording",), {"video": True, "audio": True}, "unknown field.*audio"),
    ]
    for args, fields, error in refused:
        with pytest.raises(commands.CommandError, match=error):
            commands.request(path, *args, **fields)
    # Still off, nothing written, and still answering.
    assert commands.request(path, "recording") == {"ok": True, **OFF, "session": None, "state": "off"}
    assert sessions(ssd) == []
    assert jpeg_size(Path(commands.request(path, "snapshot")["path"])) == (TEST_WIDTH, TEST_HEIGHT)
    assert not Path(env["SHM_RECORDER_SOCKET"] + ".recording.json").exists()  # no choice was made
    for proc in (recorder, feeder):
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output


def test_the_choice_outlives_a_recorder_restart_but_not_the_controller(env, start):
    env.update(ENABLE_RTSP="0", RESTART_SCOPE="worker")
    ssd, path = Path(env["SSD_PATH"]), command_socket(env)
    drone = start("streamer.drone", env)
    drone.wait_up()
    session = wait_for_chunks(ssd, 1)
    assert commands.request(path, "recording", **OFF)["state"] == "off"
    killed = drone.worker_pid("recorder")
    os.kill(killed, signal.SIGKILL)
    restarted = drone.wait_worker_ready("recorder", replacing=killed)
    progress = recorder_progress(
        env, lambda p: p["frames"] > TEST_FPS, "a second of frames from the new recorder", drone, restarted
    )
    assert (progress["state"], progress["video"], progress["images"]) == ("off", False, False)
    assert "recorder: recording off, as chosen at runtime under this controller" in drone.output
    assert sessions(ssd) == [session]  # it opened no session
    assert commands.request(path, "recording", images=True)["state"] == "recording"
    drone.signal(signal.SIGTERM)
    assert drone.wait() == 0, drone.output

    # A new controller: the settings count again (video and images).
    again = start("streamer.drone", env)
    again.wait_for(r"recorder: recording video and images into")
    recorder_progress(
        env, lambda p: (p["state"], p["video"], p["images"]) == ("recording", True, True), "recording", again
    )
    again.signal(signal.SIGTERM)
    assert again.wait() == 0, again.output


def test_while_waiting_for_the_disk_the_choice_is_kept_and_snapshots_refused(workdir, env, start):
    require_root_file_system(workdir)
    env.update(RECORD_REQUIRE_MOUNT="1")
    ssd, path = Path(env["SSD_PATH"]), command_socket(env)
    feeder = start("streamer.feeder", env)
    feeder.wait_for("camera is delivering frames")
    recorder = start("streamer.recorder", env)
    recorder.wait_for(r"not recording until it is mounted")
    answer = commands.request(path, "recording", video=False, images=False)
    assert answer == {"ok": True, **OFF, "session": None, "state": "no-disk"}
    with pytest.raises(commands.CommandError, match=r"is not a mounted disk \(RECORD_REQUIRE_MOUNT=1\)"):
        commands.request(path, "snapshot")
    assert not ssd.exists()

    with tmpfs(workdir, "64M") as mounted:
        recorder.wait_for(re.escape(f"SSD_PATH {ssd} is on a mounted file system now"))
        recorder.wait_for(r"recording is off \(snapshots can be taken\)")
        snapshot = Path(commands.request(path, "snapshot")["path"])
        assert snapshot.parent.parent == mounted and jpeg_size(snapshot) == (TEST_WIDTH, TEST_HEIGHT)
        assert [p.name for p in snapshot.parent.iterdir()] == [snapshot.name]  # nothing recorded
        for proc in (recorder, feeder):
            proc.signal(signal.SIGTERM)
            assert proc.wait() == 0, proc.output
    os.unlink(env["SHM_RECORDER_SOCKET"] + ".recording.json")  # the controller removes it at its exit


def test_snapshots_are_numbered_on_and_only_whole_files_get_their_name(tmp_path: Path):
    session = layout.create_session_dir(tmp_path)
    (session / "snapshot_00004.jpg.unplayable").write_bytes(b"")  # numbering goes past set-aside files
    (session / ".snapshot_00007.tmp").write_bytes(b"\xff\xd8 cut")  # what a killed recorder left
    first = layout.save_snapshot(session, b"\xff\xd8 one \xff\xd9")
    second = layout.save_snapshot(session, b"\xff\xd8 two \xff\xd9")
    assert (first.name, second.name) == ("snapshot_00005.jpg", "snapshot_00006.jpg")
    assert second.read_bytes() == b"\xff\xd8 two \xff\xd9"
    assert layout.interrupted_snapshots(session) == [session / ".snapshot_00007.tmp"]
    with pytest.raises(OSError):
        layout.save_snapshot(tmp_path / "gone", b"\xff\xd8")
