"""One workdir, one writer: a second trainer is refused at once, naming the holder; a killed holder
leaves no stale lock."""

import os
import signal
import subprocess
import sys
import time

import pytest
from test_train import tiny_config

from unroll import train
from unroll.train.workdir import WorkdirBusyError, exclusive

HOLD = "import sys, time; from unroll.train.workdir import exclusive\n" \
       "with exclusive(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)\n"


def test_second_trainer_is_refused_naming_the_holder(tmp_path):
    with exclusive(tmp_path):
        with pytest.raises(WorkdirBusyError, match=f"process {os.getpid()} on") as err:
            train.train_and_evaluate(tiny_config(), tmp_path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "log.jsonl").exists()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirBusyError, match=f"process {holder.pid} on"):
            with exclusive(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.time() + 10
    while True:  # the kernel drops the lock with the process
        try:
            with exclusive(tmp_path):
                break
        except WorkdirBusyError:
            assert time.time() < deadline
            time.sleep(0.1)
