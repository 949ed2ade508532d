"""The suite-wide leftovers guard (tests/conftest.py) fails a module that leaves a process or a port."""

from pathlib import Path

pytest_plugins = ["pytester"]
CONFTEST = (Path(__file__).resolve().parents[1] / "conftest.py").read_text()


def test_a_leaked_process_and_port_fail_the_module_and_the_process_is_stopped(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_leaky="""
        import socket, subprocess
        KEEP = []
        def test_leaks():
            KEEP.append(subprocess.Popen(["sleep", "300"]))
            s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); KEEP.append(s)
        def test_after():
            assert KEEP[0].poll() is None
    """, test_clean="""
        import subprocess
        def test_waits():
            subprocess.run(["true"], check=True)
    """)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(passed=3, errors=1)
    out = r.stdout.str()
    assert "test_leaky left behind: processes ['pid" in out and "sleep 300" in out and "listening [('127.0.0.1'," in out
    assert "test_clean left behind" not in out
