"""Shell completion for qloractl (client/cli/completions): the scripts `qloractl completion
bash|zsh` prints are the files in the repository, and, sourced into a real bash (and zsh, when
installed: Debian's `zsh` package, in scripts/deps.sh), they complete commands, options, state
names and the ids of jobs that a real coordinator on loopback lists, filtered by state for cancel
and retry."""
import json
import os
import pty
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, Cluster, binary

COMPLETIONS = REPO / "client" / "cli" / "completions"
BASH_SCRIPT = COMPLETIONS / "qloractl.bash"
ZSH_SCRIPT = COMPLETIONS / "_qloractl"
SPEC = "name: {name}\nmodel: {{path: /models/none}}\ndata: {{path: data/train.jsonl}}\ntrain: {{max_steps: 3}}\n"


def ctl_env() -> dict:
    """The shells find the built qloractl as `qloractl` (what the scripts complete and call)."""
    return {**os.environ, "PATH": f"{binary('qloractl').parent}:{os.environ['PATH']}"}


def bash_complete(line: str, cwd: Path) -> list[str]:
    """COMPREPLY after the bash script completes the last word of `line` (a trailing space: a
    new, empty word), as bash would on TAB."""
    words = line.split(" ")
    script = (f"source {BASH_SCRIPT}\n"
              'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}\n'
              "_qloractl\n"
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    res = subprocess.run(["bash", "-c", script, "bash", *words], capture_output=True, text=True,
                         timeout=60, cwd=cwd, env=ctl_env())
    assert res.returncode == 0 and res.stderr == "", res
    return sorted(w for w in res.stdout.splitlines() if w)


# An interactive zsh on a pseudo-terminal with compinit and the script loaded; compadd is
# wrapped to print each match it adds (with the prefixes zsh would insert), so a TAB shows what
# the completion offered.
ZSH_SETUP = r"""setopt interactive_comments; PROMPT="ZLE-""READY> "; RPROMPT=''; unset zle_bracketed_paste
autoload -Uz compinit && compinit -u -D
source {script}
compadd() {{
  # -O, -A or -D: a caller collecting matches for itself, not adding them.
  if [[ ${{@[1,(i)(-|--)]}} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return; fi
  local -a __hits; local -A apre hpre
  builtin compadd -A __hits "$@"
  zparseopts -E P:=apre p:=hpre
  local h; for h in $__hits; do print -r -- "MATCH:$IPREFIX${{apre[-P]}}${{hpre[-p]}}$h"; done
  builtin compadd "$@"
}}
print READY-$((1+1))
"""


# The prompt (its echo in the setup line reads ZLE-""READY): what zsh prints once the line
# editor is ready. Keys typed before it may be dropped, so each line waits for it.
PROMPT = b"ZLE-READY> "


class Zsh:
    def __init__(self, cwd: Path):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(["zsh", "-f", "-i"], stdin=slave, stdout=slave, stderr=slave,
                                     cwd=cwd, env={**ctl_env(), "TERM": "dumb"}, close_fds=True)
        os.close(slave)
        self.buffer = b""
        self.cases = 0
        os.write(self.master, ZSH_SETUP.format(script=ZSH_SCRIPT).encode())
        self.read_until(b"READY-2")
        self.read_until(PROMPT)

    def read_until(self, token: bytes, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while token not in self.buffer:
            ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"zsh never printed {token!r}; it printed:\n{self.buffer[-3000:]!r}"
            self.buffer += os.read(self.master, 65536)
        out, self.buffer = self.buffer.split(token, 1)
        return out.decode(errors="replace")

    def complete(self, line: str) -> list[str]:
        """The matches a TAB after `line` offers; the line is then cleared (Ctrl-U) and a marker
        printed that only the command's output (not its echo) contains."""
        self.cases += 1
        marker = 1000 + self.cases
        os.write(self.master, line.encode() + b"\t" + f"\x15print CASE-$(({marker}))\n".encode())
        out = self.read_until(f"CASE-{marker}".encode())
        self.read_until(PROMPT)
        return sorted(set(re.findall(r"MATCH:(\S+)", out)))

    def close(self):
        self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self.master)


@pytest.fixture()
def coordinator(tmp_path):
    """A coordinator with no worker and three jobs: one queued, two cancelled."""
    c = Cluster(tmp_path)
    c.start_coordinator()
    ids = {}
    for name in ("waits", "stopped", "dropped"):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(SPEC.format(name=name))
        ids[name] = json.loads(c.ctl("--json", "submit", spec, check=True).stdout)["id"]
    for name in ("stopped", "dropped"):
        c.ctl("cancel", ids[name], check=True)
    c.ids = ids
    yield c
    c.stop()


@pytest.fixture()
def workdir(tmp_path) -> Path:
    """A folder with a spec of each kind submit completes, a file it does not, and a folder."""
    d = tmp_path / "files"
    d.mkdir()
    for name in ("job.yaml", "other.yml", "spec.json", "notes.txt"):
        (d / name).write_text("")
    (d / "specs").mkdir()
    return d


def test_completion_prints_the_scripts_in_the_repository():
    for shell, path in (("bash", BASH_SCRIPT), ("zsh", ZSH_SCRIPT)):
        res = subprocess.run([str(binary("qloractl")), "completion", shell], capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 0, res
        assert res.stdout == path.read_text(), f"`qloractl completion {shell}` differs from {path}"
    res = subprocess.run([str(binary("qloractl")), "completion", "fish"], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 2 and "fish" in res.stderr, res


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_bash_script_passes_shellcheck():
    res = subprocess.run(["shellcheck", "-s", "bash", str(BASH_SCRIPT)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout


def test_bash_completes_commands_options_states_and_files(workdir):
    assert bash_complete("qloractl st", workdir) == ["status"]
    assert bash_complete("qloractl --json re", workdir) == ["retry"]
    assert "workers" in bash_complete("qloractl ", workdir)
    assert bash_complete("qloractl retry --f", workdir) == ["--follow", "--from-scratch"]
    assert bash_complete("qloractl jobs --st", workdir) == ["--state"]
    assert bash_complete("qloractl jobs --state c", workdir) == ["cancelled", "completed"]
    assert bash_complete("qloractl jobs --state running,f", workdir) == ["running,failed"]
    assert bash_complete("qloractl completion ", workdir) == ["bash", "zsh"]
    assert bash_complete("qloractl submit ", workdir) == ["job.yaml", "other.yml", "spec.json",
                                                          "specs"]


def test_bash_completes_job_ids_from_the_coordinator(coordinator, workdir):
    ids, server = coordinator.ids, ["--server", coordinator.addr]
    every = sorted(ids.values())
    assert bash_complete(" ".join(["qloractl", *server, "status", ""]), workdir) == every
    assert bash_complete(" ".join(["qloractl", "logs", *server, ""]), workdir) == every
    assert bash_complete(" ".join(["qloractl", *server, "cancel", ""]), workdir) == [ids["waits"]]
    assert bash_complete(" ".join(["qloractl", *server, "retry", ""]), workdir) == sorted(
        [ids["stopped"], ids["dropped"]])
    prefix = ids["stopped"][:-1]
    assert ids["stopped"] in bash_complete(" ".join(["qloractl", *server, "watch", prefix]), workdir)
    # A coordinator that is not there completes nothing, and says nothing.
    assert bash_complete("qloractl --server 127.0.0.1:1 status ", workdir) == []


@pytest.mark.skipif(shutil.which("zsh") is None,
                    reason="zsh is not installed (Debian's zsh package; scripts/deps.sh installs it)")
def test_zsh_completes_commands_options_states_files_and_job_ids(coordinator, workdir):
    zsh = Zsh(workdir)
    try:
        ids, server = coordinator.ids, f"--server {coordinator.addr}"
        assert zsh.complete("qloractl st") == ["status"]
        assert "workers" in zsh.complete("qloractl ")
        assert {"--follow", "--from-scratch"} <= set(zsh.complete("qloractl retry --f"))
        assert zsh.complete("qloractl jobs --state running,c") == ["running,cancelled",
                                                                   "running,completed"]
        assert zsh.complete("qloractl completion ") == ["bash", "zsh"]
        assert zsh.complete("qloractl submit ") == ["job.yaml", "other.yml", "spec.json", "specs"]
        assert zsh.complete(f"qloractl {server} status ") == sorted(ids.values())
        assert zsh.complete(f"qloractl {server} cancel ") == [ids["waits"]]
        assert zsh.complete(f"qloractl {server} retry ") == sorted([ids["stopped"], ids["dropped"]])
    finally:
        zsh.close()
