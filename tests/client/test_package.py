"""The client is a package of its own: the standard library only, and where its login lives, who may read it."""

import ast
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from unittest import mock

from django.test import SimpleTestCase
from parseq_client.login import BadAddress, Login, NotLoggedIn, current_login, store_login

from tests.live import REPOSITORY

CLIENT = REPOSITORY / "client" / "parseq_client"


def imported_modules(path):
    """The top-level names of every module a file imports, function-level imports too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


class PackageTests(SimpleTestCase):
    def test_the_client_imports_only_the_standard_library_and_itself(self):
        for path in sorted(CLIENT.glob("*.py")):
            with self.subTest(path.name):
                foreign = imported_modules(path) - set(sys.stdlib_module_names) - {"parseq_client"}

                self.assertEqual(foreign, set())


class LoginFileTests(SimpleTestCase):
    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="parseq-test-login-"))
        self.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        variables = {"PARSEQ_CONFIG_DIR": str(self.directory / "parseq")}
        patcher = mock.patch.dict(os.environ, variables)
        patcher.start()
        self.addCleanup(patcher.stop)
        for name in ("PARSEQ_URL", "PARSEQ_TOKEN"):
            os.environ.pop(name, None)

    def test_a_stored_login_replaces_a_file_others_could_read_with_one_only_its_owner_can(self):

        path = self.directory / "parseq" / "login.json"
        path.parent.mkdir()
        path.write_text("{}")
        path.chmod(0o644)

        store_login(Login(url="https://parseq.example.com", token="t0k3n", username="ada"))

        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual(current_login(), Login(url="https://parseq.example.com", token="t0k3n"))
        self.assertEqual([p.name for p in path.parent.iterdir()], ["login.json"])  # no partial file left

    def test_the_variables_win_and_a_stored_token_never_goes_to_another_server(self):

        store_login(Login(url="https://one.example.com", token="token-of-one"))

        elsewhere = mock.patch.dict(os.environ, {"PARSEQ_URL": "https://two.example.com/"})
        with elsewhere, self.assertRaisesMessage(NotLoggedIn, "not logged in to https://two.example.com/"):
            current_login()
        with mock.patch.dict(os.environ, {"PARSEQ_URL": "https://two.example.com", "PARSEQ_TOKEN": "token-of-two"}):
            self.assertEqual(current_login(), Login(url="https://two.example.com", token="token-of-two"))

    def test_an_address_that_is_not_http_is_refused_by_name(self):

        for address in ("file:///etc/passwd", "parseq.example.com", "ftp://parseq.example.com", "http://"):
            given = mock.patch.dict(os.environ, {"PARSEQ_URL": address, "PARSEQ_TOKEN": "t"})
            with self.subTest(address), given, self.assertRaisesMessage(BadAddress, "not a server address"):
                current_login()

    def test_a_stored_login_that_cannot_be_read_says_where_it_is(self):

        path = self.directory / "parseq" / "login.json"
        path.parent.mkdir()
        path.write_text("not json")

        with self.assertRaisesMessage(NotLoggedIn, f"the stored login ({path}) cannot be read"):
            current_login()
