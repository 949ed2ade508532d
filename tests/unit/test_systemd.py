from llmhost.systemd import env_file, exec_line, quote_arg


def test_quote_arg():
    assert quote_arg("--max-num-seqs") == "--max-num-seqs"
    assert quote_arg("/srv/models/a b") == '"/srv/models/a b"'
    assert quote_arg('{"a": 1}') == '"{\\"a\\": 1}"'
    assert quote_arg("50%") == "50%%" and quote_arg("$HOME") == '"$$HOME"'
    assert quote_arg("") == '""'


def test_exec_line_and_env_file():
    assert exec_line(["python", "-m", "x", "--port", 8101]) == "python -m x --port 8101"
    assert env_file({"B": "2", "A": 'say "hi"'}) == 'A="say \\"hi\\""\nB="2"\n'
