"""The `parseq` command: its arguments, and what each subcommand's outcome means as an exit status.

Exit status: 0 done; 1 the answer is no (a run that did not complete, a refused or unreadable
script, files that differ); 2 a usage or local problem (a bad argument, not logged in, a directory
that cannot be written); 3 the server could not do it (unreachable, the token refused, a permission
missing, no such object). `parseq test` exits as `python -m runner` does.
"""

import argparse
import getpass
import os
import sys
import urllib.parse

from parseq_client import __version__, runs, scripts
from parseq_client.connection import TIMEOUT_SECONDS, Server, ServerProblem
from parseq_client.login import (
    Login,
    current_login,
    forget_login,
    login_path,
    server_address,
    store_login,
)
from parseq_client.output import Output
from parseq_client.problems import LocalProblem

USAGE, SERVER = 2, 3
LOOPBACK = ("localhost", "127.0.0.1", "::1")  # plain HTTP to these crosses no network
STATUSES = ["enqueued", "running", "completed", "error", "cancelled", "skipped"]


def main(argv=None):
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    out = Output(as_json=arguments.json)
    try:
        return arguments.command(arguments, out)
    except LocalProblem as problem:
        out.note(f"parseq: {problem}")
        return USAGE
    except ServerProblem as problem:
        out.note(f"parseq: {problem}")
        return SERVER
    except (KeyError, TypeError) as error:  # an answer without what Parseq's API always gives
        out.note(f"parseq: the server's answer is not what Parseq's API gives ({type(error).__name__}: {error})")
        return SERVER
    except BrokenPipeError:  # `parseq runs | head -1`: whoever read the output has stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as error:  # a directory that cannot be made, a file that cannot be written
        out.note(f"parseq: {error.strerror or error}" + (f": {error.filename}" if error.filename else ""))
        return USAGE
    except EOFError:
        out.note("parseq: the input ended before a user name or password came (use -u and --password-stdin)")
        return USAGE
    except KeyboardInterrupt:
        out.note("parseq: interrupted")
        return 130


def server():
    login = current_login()
    return Server(login.url, token=login.token, timeout=timeout())


def timeout():
    """PARSEQ_TIMEOUT: the seconds a whole answer may take (a slow link, a large list)."""
    given = os.environ.get("PARSEQ_TIMEOUT", "")
    if not given:
        return TIMEOUT_SECONDS
    if not (given.isascii() and given.isdigit() and 1 <= int(given) <= 3600):
        raise LocalProblem(f"PARSEQ_TIMEOUT={given!r} is no number of seconds from 1 to 3600")
    return int(given)


def login(arguments, out):
    url = server_address(arguments.url)
    username = arguments.username or input("User: ").strip()
    password = sys.stdin.readline().rstrip("\r\n") if arguments.password_stdin else getpass.getpass("Password: ")
    if not (username and password):
        raise LocalProblem("a user name and a password are needed (the input ended before them?)")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        out.note(f"parseq: warning: {url} is plain HTTP; your password and token cross the network readable")
    answer = Server(url, username=username, password=password, timeout=timeout()).post("/api/token/")
    path = store_login(Login(url=url, token=answer["token"], username=answer["username"]))
    out.line(f"logged in to {url} as {answer['username']} (token stored in {path})")
    out.data({"url": url, "username": answer["username"], "stored_in": str(path)})
    return 0


def logout(arguments, out):
    forgotten = forget_login()
    out.line(f"forgot the login in {login_path()}" if forgotten else "not logged in")
    out.data({"forgotten": forgotten})
    return 0


def push(arguments, out):
    return scripts.push(server(), out, arguments.paths, message=arguments.message, dry_run=arguments.dry_run)


def check(arguments, out):
    return scripts.check(server(), out, arguments.files)


def diff(arguments, out):
    name, path = arguments.name, arguments.file
    if path is None:  # `parseq diff http_cat` compares http_cat.py; `parseq diff parsers/http_cat.py` names both
        name, path = (name.rsplit("/", 1)[-1][:-3], name) if name.endswith(".py") else (name, f"{name}.py")
    return scripts.diff(server(), out, name, path)


def test(arguments, out):
    options = [f"--env={name}={value}" for name, value in arguments.env]
    options += [f"--timeout={arguments.timeout}"] if arguments.timeout is not None else []
    return scripts.try_locally(out, arguments.file, out_dir=arguments.out, runner_options=options + arguments.rest)


def run(arguments, out):
    environment = dict(arguments.env)
    return runs.start(
        server(), out, arguments.name, environment=environment, timeout=arguments.timeout, follow=arguments.follow
    )


def runs_list(arguments, out):
    return runs.listing(server(), out, arguments.name, status=arguments.status, limit=arguments.limit)


def logs(arguments, out):
    return runs.show_log(server(), out, runs.run_id_of(arguments.run_id), follow_it=arguments.follow)


def download(arguments, out):
    run_id = runs.run_id_of(arguments.run_id)
    return runs.download(server(), out, run_id, directory=arguments.output, force=arguments.force)


def variable(text):
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def seconds(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds, 1 or more")
    return int(text)


def page_size(text):
    if not text.isdigit() or not 1 <= int(text) <= 500:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 500")
    return int(text)


def parse_arguments(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON, for scripts")
    parser = argparse.ArgumentParser(
        prog="parseq",
        description="Parseq from the command line: push parser scripts, run them, follow their logs, download "
        "their files. The server and token: `parseq login`, or PARSEQ_URL and PARSEQ_TOKEN.",
        epilog="Exit status: 0 done; 1 a run that did not complete, a refused script, files that differ; "
        "2 a usage or local problem; 3 the server could not do it.",
    )
    parser.add_argument("--version", action="version", version=f"parseq {__version__}")
    parser.add_argument("--json", action="store_true", default=False, help="print JSON, for scripts")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(name, function, description):
        sub = commands.add_parser(name, parents=[common], help=description, description=description)
        sub.set_defaults(command=function)
        return sub

    sub = command("login", login, "Log in to a Parseq server once; its token is kept for the other commands.")
    sub.add_argument("url", metavar="URL", help="the server, as http(s)://host[:port]")
    sub.add_argument("--username", "-u", help="your user name (asked for when not given)")
    sub.add_argument("--password-stdin", action="store_true", help="read the password from stdin, not a prompt")

    command("logout", logout, "Forget the stored login.")

    sub = command("push", push, "Make each .py file the current script of the parser named after it.")
    sub.add_argument("paths", nargs="+", metavar="PATH", help="a .py file, or a directory of them")
    sub.add_argument("--message", "-m", default="", help="why the scripts changed, kept with each new version")
    sub.add_argument("--dry-run", "-n", action="store_true", help="show what would change, change nothing")

    sub = command("run", run, "Run a parser now.")
    sub.add_argument("name", metavar="NAME", help="the parser")
    sub.add_argument(
        "--env",
        "-e",
        type=variable,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a variable for this run only (repeatable)",
    )
    sub.add_argument("--timeout", type=seconds, help="seconds this run may take, instead of the parser's")
    sub.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="print the log as it is printed, until the run ends; exit 0 only if it completed",
    )

    sub = command("runs", runs_list, "List the newest runs, of one parser or all.")
    sub.add_argument("name", metavar="NAME", nargs="?", help="the parser (default: all)")
    sub.add_argument("--status", "-s", choices=STATUSES, help="only runs in this status")
    sub.add_argument("--limit", type=page_size, default=20, help="how many (default 20, at most 500)")

    sub = command("logs", logs, "Print a run's log.")
    sub.add_argument("run_id", metavar="RUN_ID")
    sub.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")

    sub = command("download", download, "Download a run's files, or the error of a failed run.")
    sub.add_argument("run_id", metavar="RUN_ID")
    sub.add_argument("--output", "-o", default=".", metavar="DIR", help="where to (default: here)")
    sub.add_argument("--force", action="store_true", help="replace files that exist")

    sub = command("check", check, "Ask the server whether it would take these scripts, saving nothing.")
    sub.add_argument("files", nargs="+", metavar="FILE", help="a .py file, or a directory of them")

    sub = command("test", test, "Run a script here, as a worker would (Parseq's runner, from a checkout).")
    sub.add_argument("file", metavar="FILE")
    sub.add_argument("--out", "-o", metavar="DIR", help="where its files go (default: a new temporary directory)")
    sub.add_argument(
        "--env", "-e", type=variable, action="append", default=[], metavar="NAME=VALUE", help="a variable (repeatable)"
    )
    sub.add_argument("--timeout", type=seconds, help="seconds it may take (default: the runner's 300)")
    sub.epilog = "After --, more of `python -m runner`'s options: parseq test my.py -- --no-restricted --cold"

    sub = command("diff", diff, "Compare a local file with the parser's current script on the server.")
    sub.add_argument("name", metavar="NAME", help="the parser (or its file, parsers/NAME.py)")
    sub.add_argument("file", metavar="FILE", nargs="?", help="the local file (default: NAME.py)")
    # After `parseq test FILE …`, what follows `--` is the runner's: argparse would take it for its own (elsewhere,
    # `--` keeps its meaning: `parseq push -- -odd.py`).
    argv, rest = list(argv), []
    words = [word for word in argv if not word.startswith("-")]
    if words[:1] == ["test"] and "--" in argv[argv.index("test") + 2 :]:
        split = argv.index("--", argv.index("test") + 2)
        argv, rest = argv[:split], argv[split + 1 :]
    arguments = parser.parse_args(argv)
    arguments.rest = rest
    return arguments
