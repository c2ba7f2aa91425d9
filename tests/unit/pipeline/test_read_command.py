"""The "read it with" command printed after an annotate run: valid shell and Python for any output path."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pandas as pd
import pytest

from froq_ray.pipeline.annotate import read_command


@pytest.mark.parametrize("name", ["plain", "it's", 'say "hi"', "both ' and \"", "$HOME `x` \\n ünï"])
def test_the_printed_command_runs_in_a_shell_and_reads_that_output(tmp_path, name):
    out = tmp_path / name
    out.mkdir()
    pd.DataFrame(
        {
            "path": ["/a/x.jpg", "/a/y.jpg", "/a/z.jpg"],
            "status": ["ok", "corrupt", "ok"],
            "quality": [0.9, None, 0.1],
        }
    ).to_parquet(out / "part-00000.parquet")
    command = read_command(str(out))
    assert command.startswith("python -c ")
    runnable = shlex.quote(sys.executable) + command.removeprefix("python")
    done = subprocess.run(["bash", "-c", runnable], capture_output=True, text=True, check=True)
    # the ok rows by quality: z (0.1) then x (0.9); the corrupt row is left out
    lines = done.stdout.splitlines()
    assert [line.split()[1:] for line in lines[1:]] == [["/a/z.jpg", "0.1"], ["/a/x.jpg", "0.9"]]


def test_a_plain_path_reads_plainly():
    assert read_command("/data/out") == (
        'python -c \'import pandas as pd; df = pd.read_parquet("/data/out"); '
        'print(df[df.status == "ok"].sort_values("quality")[["path", "quality"]])\''
    )
