"""The command line tool (depth_perception.cli): verbs and one-line errors."""
import subprocess
import sys

from depth_perception import cli


def test_cli_lists_verbs_and_reports_errors_cleanly(capsys):
    parser = cli.build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    assert "synth" in verbs
    out = subprocess.run([sys.executable, "-m", "depth_perception", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "synth" in out


def test_cli_boundary_errors_are_one_line_messages(tmp_path, capsys):
    # a bad --size is a ValueError inside the verb: printed as one line, exit code 2
    code = cli.main(["synth", str(tmp_path / "bags"), "--frames", "3", "--size", "64by32"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("depth-perception synth: error:") and "Traceback" not in err
