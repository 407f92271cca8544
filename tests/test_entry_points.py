"""The entry points' error reporting: a user's mistake is one line and exit 2, a failed save one line
and exit 1, anything else a real traceback; a refused flag costs no import of the heavy stack."""

import subprocess
import sys

import pytest
from absl import flags

from experiments.common import UsageError, define_config_flags, run_reporting_user_errors
from unroll.atomic import FolderBusyError, WriteError
from unroll.checkpoint import CheckpointError, CheckpointSaveError
from unroll.config import ConfigError
from unroll.data import DataError
from unroll.train.workdir import WorkdirBusyError


@pytest.fixture(autouse=True)
def _config_flags_defined_not_parsed(monkeypatch):
    """The state a worker is in after another test defined the Config flags and none parsed them;
    whether these tests met it used to depend on the order xdist gave them."""
    define_config_flags()
    monkeypatch.setitem(flags.FLAGS.__dict__, "__flags_parsed", False)


def _raising(exc):
    def run(argv):
        raise exc
    return run


@pytest.mark.parametrize("exc, code", [
    (UsageError("--input=x.png: no such file"), 2),
    (ConfigError("--stages=0: must be at least 1"), 2),
    (DataError("no images in /data"), 2),
    (CheckpointError("no checkpoint in run"), 2),
    (WorkdirBusyError("run is in use by pid 7"), 2),
    (FileExistsError("out/a.png exists"), 2),
    (CheckpointSaveError("disk full while saving step 4"), 1),
    (FolderBusyError("out is in use by process 7 on host; use another --output_dir"), 2),
    (WriteError("cannot write a_deblurred.png in out: No space left on device (0 MiB free there)"), 1),
])
def test_known_errors_are_one_line_with_their_exit_code(exc, code, capsys):
    with pytest.raises(SystemExit) as exited:
        run_reporting_user_errors(_raising(exc), ["prog"])
    assert exited.value.code == code
    err = capsys.readouterr().err
    assert err == f"error: {exc}\n"


def test_a_bug_is_not_dressed_up_as_a_user_error():
    with pytest.raises(ZeroDivisionError):
        run_reporting_user_errors(_raising(ZeroDivisionError("a bug")), ["prog"])


def test_a_refused_flag_imports_neither_jax_nor_orbax():
    probe = ("import sys\n"
             "from experiments import mgstnet\n"
             "try:\n"
             "    mgstnet.app.run(mgstnet.main, ['prog', '--pretrained=aerial', '--mode=train'])\n"
             "except SystemExit as e:\n"
             "    print(e.code, 'jax' in sys.modules, 'orbax.checkpoint' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False", "False"], out.stderr
    assert "--pretrained" in out.stderr and "Traceback" not in out.stderr
