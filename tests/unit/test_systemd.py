from llmhost.systemd import env_file, exec_line, preload_env, quote_arg


def test_quote_arg():
    assert quote_arg("--max-num-seqs") == "--max-num-seqs"
    assert quote_arg("/srv/models/a b") == '"/srv/models/a b"'
    assert quote_arg('{"a": 1}') == '"{\\"a\\": 1}"'
    assert quote_arg("50%") == "50%%" and quote_arg("$HOME") == '"$$HOME"'
    assert quote_arg("") == '""'


def test_exec_line_and_env_file():
    assert exec_line(["python", "-m", "x", "--port", 8101]) == "python -m x --port 8101"
    assert env_file({"B": "2", "A": 'say "hi"'}) == 'A="say \\"hi\\""\nB="2"\n'


TC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
IOMP = "/opt/vllm/venv/lib/libiomp5.so"


def test_preload_env_follows_profile_arch_and_what_exists():
    assert preload_env([TC, IOMP], tcmalloc=True, iomp=True, arch="x86_64") == {"LD_PRELOAD": f"{TC}:{IOMP}"}
    # GNU OpenMP on aarch64: never Intel's runtime there
    assert preload_env([TC, IOMP], tcmalloc=True, iomp=True, arch="aarch64") == {"LD_PRELOAD": TC}
    assert preload_env([TC, IOMP], tcmalloc=True, iomp=False, arch="x86_64") == {"LD_PRELOAD": TC}
    assert preload_env([TC, IOMP], tcmalloc=False, iomp=True, arch="x86_64") == {}  # the legacy profile
    assert preload_env([], tcmalloc=True, iomp=True, arch="x86_64") == {}  # nothing installed: no empty LD_PRELOAD
