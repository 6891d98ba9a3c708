"""Failed sign-ins lock a user, and an address, out of the admin and the API for a while, without hashing passwords."""

import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.core.management import CommandError, call_command
from django.db.models import F
from django.test import RequestFactory, SimpleTestCase, TestCase, override_settings

from parseq.access import logins
from parseq.access.models import LoginFailure
from tests.access.helpers import (
    ADMIN_LOGIN,
    API,
    COUNTING_PASSWORDS,
    counting_hashes,
    forget_verified_credentials,
    make_user,
)
from tests.api.helpers import basic

LOCKED = "Too many failed sign-ins for this user or from this address: try again in 15 minutes."


@COUNTING_PASSWORDS
class SignInTestCase(TestCase):
    def setUp(self):
        forget_verified_credentials(self)
        self.alice = make_user("alice", "alice-pass")

    def api(self, username, password, address="127.0.0.1", **headers):
        return self.client.get(API, REMOTE_ADDR=address, **basic(username, password), **headers)

    def admin_login(self, username, password, address="127.0.0.1"):
        self.client.logout()
        data = {"username": username, "password": password, "next": "/admin/"}
        return self.client.post(ADMIN_LOGIN, data, REMOTE_ADDR=address)

    def fail_api(self, times, username="alice", address="127.0.0.1"):
        for _ in range(times):
            self.assertEqual(self.api(username, "wrong", address).status_code, 401)

    def fail_admin(self, times, username="alice", address="127.0.0.1"):
        for _ in range(times):
            response = self.admin_login(username, "wrong", address)
            self.assertContains(response, "Please enter the correct username and password")

    def assertSignedInToAdmin(self, response):
        self.assertRedirects(response, "/admin/", fetch_redirect_response=False)
        self.assertEqual(self.client.session[SESSION_KEY], str(self.alice.pk))

    def assertLockedOutOfAdmin(self, response, message=LOCKED):
        self.assertContains(response, message)
        self.assertNotIn(SESSION_KEY, self.client.session)


class UserLockoutTests(SignInTestCase):
    def test_five_failed_api_sign_ins_lock_the_user_out_of_the_api_without_hashing_her_password(self):
        # Given five wrong passwords for alice through the API
        self.fail_api(5)

        # When she then sends the right one
        with counting_hashes() as hashes:
            response = self.api("alice", "alice-pass")

        # Then she is refused for now, and her password was not even hashed
        self.assertEqual(response.status_code, 429)
        self.assertEqual(hashes.count, 0)

    def test_four_failed_sign_ins_do_not_lock_the_user_out(self):
        # Given one failure short of the limit
        self.fail_api(4)

        # When alice sends the right password
        response = self.api("alice", "alice-pass")

        # Then she is in
        self.assertEqual(response.status_code, 200)

    def test_five_failed_admin_sign_ins_lock_the_user_out_of_the_admin_without_hashing_her_password(self):
        # Given five wrong passwords for alice in the admin's login form
        self.fail_admin(5)

        # When she then types the right one
        with counting_hashes() as hashes:
            response = self.admin_login("alice", "alice-pass")

        # Then the form says why and for how long, she is not signed in, and nothing was hashed
        self.assertLockedOutOfAdmin(response)
        self.assertEqual(hashes.count, 0)

    def test_failures_through_the_api_lock_the_admin_form_for_that_user_and_the_other_way_round(self):
        # Given five failures for alice through the API, and five for bob in the admin
        make_user("bob", "bob-pass")
        self.fail_api(5, "alice")
        self.fail_admin(5, "bob")

        # When each tries the other way in with the right password
        alice_in_admin = self.admin_login("alice", "alice-pass")
        bob_in_api = self.api("bob", "bob-pass")

        # Then both are locked out there too
        self.assertLockedOutOfAdmin(alice_in_admin)
        self.assertEqual(bob_in_api.status_code, 429)

    def test_a_locked_out_user_is_locked_out_from_any_address_while_other_users_sign_in(self):
        # Given five failures for alice from one address
        make_user("bob", "bob-pass")
        self.fail_api(5, address="192.0.2.1")

        # When alice tries from another address, and bob from the first one
        alice = self.api("alice", "alice-pass", address="198.51.100.7")
        bob = self.api("bob", "bob-pass", address="192.0.2.1")

        # Then alice is still locked out, and bob is in
        self.assertEqual(alice.status_code, 429)
        self.assertEqual(bob.status_code, 200)

    def test_a_locked_out_api_request_gets_429_in_the_api_error_shape_with_retry_after(self):
        # Given alice locked out
        self.fail_api(5)

        # When she tries again
        response = self.api("alice", "alice-pass")

        # Then the answer says why in the API's shape, and when to come back
        self.assertEqual(response.status_code, 429)
        self.assertEqual(response.json(), {"detail": LOCKED, "code": "throttled"})
        self.assertIn(int(response["Retry-After"]), range(890, 901))


class AddressLockoutTests(SignInTestCase):
    def test_twenty_failures_from_one_address_lock_it_out_whatever_the_usernames(self):
        # Given twenty failures from one address, each for another (made-up) user
        for number in range(20):
            self.fail_api(1, username=f"guess{number}", address="192.0.2.1")

        # When alice signs in from that address, and from another one
        with counting_hashes() as hashes:
            there = self.api("alice", "alice-pass", address="192.0.2.1")
            admin_there = self.admin_login("alice", "alice-pass", address="192.0.2.1")
        elsewhere = self.api("alice", "alice-pass", address="198.51.100.7")

        # Then the address is locked out of both ways in without a hash, and the user is not
        self.assertEqual(there.status_code, 429)
        self.assertLockedOutOfAdmin(admin_there)
        self.assertEqual(hashes.count, 0)
        self.assertEqual(elsewhere.status_code, 200)

    def test_the_addresses_of_one_ipv6_slash_64_count_together(self):
        # Given twenty failures from twenty addresses of one /64
        for number in range(20):
            self.fail_api(1, username=f"guess{number}", address=f"2001:db8:1:2::{number + 1:x}")

        # When alice signs in from another address of that /64, and from another /64
        same_network = self.api("alice", "alice-pass", address="2001:db8:1:2:ffff::1")
        other_network = self.api("alice", "alice-pass", address="2001:db8:1:3::1")

        # Then the /64 is locked out, and the other is not
        self.assertEqual(same_network.status_code, 429)
        self.assertEqual(other_network.status_code, 200)


class LockoutEndTests(SignInTestCase):
    def age_failures(self, seconds):
        LoginFailure.objects.update(failed_time=F("failed_time") - timedelta(seconds=seconds))

    def test_a_lockout_ends_when_its_failures_leave_the_window(self):
        # Given alice locked out, and her failures now 15 minutes old
        self.fail_api(5)
        self.age_failures(settings.LOGIN_LOCKOUT_SECONDS)

        # When she signs in
        response = self.api("alice", "alice-pass")

        # Then she is in
        self.assertEqual(response.status_code, 200)

    def test_a_minute_before_the_window_ends_the_user_is_told_to_come_back_in_one_minute(self):
        # Given alice's five failures 14 minutes old
        self.fail_api(5)
        self.age_failures(settings.LOGIN_LOCKOUT_SECONDS - 60)

        # When she tries the API and the admin
        api = self.api("alice", "alice-pass")
        admin = self.admin_login("alice", "alice-pass")

        # Then both say a minute
        self.assertEqual(api.status_code, 429)
        self.assertIn(int(api["Retry-After"]), range(50, 61))
        self.assertTrue(api.json()["detail"].endswith("try again in 1 minute."))
        self.assertLockedOutOfAdmin(admin, LOCKED.replace("15 minutes", "1 minute"))

    def test_a_successful_sign_in_clears_that_users_failures_from_that_address_only(self):
        # Given three failures of alice from one address, one from another, and one of bob from the first
        self.fail_api(3, address="192.0.2.1")
        self.fail_api(1, address="198.51.100.7")
        self.fail_api(1, username="bob", address="192.0.2.1")

        # When alice signs in from the first address
        response = self.admin_login("alice", "alice-pass", address="192.0.2.1")

        # Then her failures from there are forgotten, and the others stay
        self.assertSignedInToAdmin(response)
        self.assertEqual(
            sorted(LoginFailure.objects.values_list("username", "address")),
            [("alice", "198.51.100.7"), ("bob", "192.0.2.1")],
        )

    def test_after_a_success_the_user_has_all_her_failures_again(self):
        # Given four failures, then a success through the API
        self.fail_api(4)
        self.assertEqual(self.api("alice", "alice-pass").status_code, 200)

        # When she fails four more times
        self.fail_api(4)

        # Then she is not locked out
        self.assertSignedInToAdmin(self.admin_login("alice", "alice-pass"))

    def test_failures_older_than_the_window_are_deleted_when_a_new_one_is_recorded(self):
        # Given two failures past the window and one inside it
        self.fail_api(2, username="old")
        self.age_failures(settings.LOGIN_LOCKOUT_SECONDS + 1)
        self.fail_api(1, username="recent")

        # When another failure is recorded
        self.fail_api(1, username="new")

        # Then only the recent ones are left
        self.assertEqual(sorted(LoginFailure.objects.values_list("username", flat=True)), ["new", "recent"])

    @override_settings(LOGIN_FAILURES_PER_USER=2, LOGIN_FAILURES_PER_ADDRESS=3, LOGIN_LOCKOUT_SECONDS=60)
    def test_the_limits_and_the_window_come_from_the_settings(self):
        # Given two failures of alice, and three of anyone from another address
        self.fail_api(2)
        for number in range(3):
            self.fail_api(1, username=f"guess{number}", address="192.0.2.1")

        # When alice signs in from a third address, and someone else from the second
        alice = self.api("alice", "alice-pass", address="198.51.100.7")
        make_user("bob", "bob-pass")
        bob = self.api("bob", "bob-pass", address="192.0.2.1")

        # Then both are locked out, for at most a minute
        self.assertEqual((alice.status_code, bob.status_code), (429, 429))
        self.assertLessEqual(int(alice["Retry-After"]), 60)


class ClientAddressTests(SignInTestCase):
    def address(self, forwarded=None, remote="10.1.2.3"):
        headers = {"REMOTE_ADDR": remote}
        if forwarded is not None:
            headers["HTTP_X_FORWARDED_FOR"] = forwarded
        return logins.client_address(RequestFactory().get("/", **headers))

    def test_without_trusted_proxy_hops_x_forwarded_for_is_ignored(self):
        self.assertEqual(self.address("203.0.113.9"), "10.1.2.3")

    @override_settings(TRUSTED_PROXY_HOPS=1)
    def test_with_one_trusted_proxy_the_rightmost_x_forwarded_for_entry_is_the_client(self):
        self.assertEqual(self.address("198.51.100.1, 203.0.113.9"), "203.0.113.9")

    @override_settings(TRUSTED_PROXY_HOPS=2)
    def test_with_two_trusted_proxies_the_second_entry_from_the_right_is_the_client(self):
        self.assertEqual(self.address("198.51.100.1,203.0.113.9 , 10.0.0.2"), "203.0.113.9")

    @override_settings(TRUSTED_PROXY_HOPS=2)
    def test_a_header_too_short_or_malformed_falls_back_to_the_connections_address(self):
        for forwarded in ["203.0.113.9", "", "not-an-address, 10.0.0.2", "203.0.113.9:443, 10.0.0.2", None]:
            with self.subTest(forwarded=forwarded):
                self.assertEqual(self.address(forwarded), "10.1.2.3")

    def test_an_ipv6_client_is_counted_by_its_slash_64_and_an_ipv4_mapped_one_as_ipv4(self):
        self.assertEqual(self.address(remote="2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64")
        self.assertEqual(self.address(remote="::ffff:192.0.2.1"), "192.0.2.1")

    def through_proxy(self, client, username, password):
        return self.client.get(API, REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=client, **basic(username, password))

    def test_without_trusted_proxy_hops_every_client_behind_a_proxy_shares_one_lockout(self):
        # Given twenty failures from one client behind the proxy
        for number in range(20):
            self.through_proxy("203.0.113.9", f"guess{number}", "wrong")

        # When alice comes through the same proxy from a client of her own
        response = self.through_proxy("198.51.100.7", "alice", "alice-pass")

        # Then she is locked out with the guesser: the proxy's address is all there is
        self.assertEqual(response.status_code, 429)

    @override_settings(TRUSTED_PROXY_HOPS=1)
    def test_with_trusted_proxy_hops_clients_behind_a_proxy_are_locked_out_apart(self):
        # Given twenty failures from one client behind the proxy
        for number in range(20):
            self.through_proxy("203.0.113.9", f"guess{number}", "wrong")

        # When alice comes through the same proxy from a client of her own, and the guesser signs in as bob
        make_user("bob", "bob-pass")
        alice = self.through_proxy("198.51.100.7", "alice", "alice-pass")
        guesser = self.through_proxy("203.0.113.9", "bob", "bob-pass")

        # Then only the guesser is locked out
        self.assertEqual((alice.status_code, guesser.status_code), (200, 429))

    @override_settings(TRUSTED_PROXY_HOPS=1)
    def test_with_trusted_proxy_hops_a_failure_is_recorded_with_the_forwarded_address(self):
        self.client.get(API, REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.5", **basic("alice", "wrong"))

        self.assertEqual(list(LoginFailure.objects.values_list("address", flat=True)), ["203.0.113.5"])


class ClearLoginsCommandTests(SignInTestCase):
    def clearlogins(self, *arguments):
        out = StringIO()
        call_command("clearlogins", *arguments, stdout=out)
        return out.getvalue()

    def setUp(self):
        super().setUp()
        self.fail_api(5, address="192.0.2.1")
        self.fail_api(2, username="bob", address="192.0.2.1")
        self.fail_api(1, username="bob", address="198.51.100.7")

    def left(self):
        return sorted(LoginFailure.objects.values_list("username", "address"))

    def test_clearing_a_user_ends_her_lockout(self):
        self.assertEqual(self.clearlogins("--user", "alice"), "Cleared 5 failed sign-ins.\n")

        self.assertEqual(self.api("alice", "alice-pass").status_code, 200)
        self.assertEqual({username for username, _ in self.left()}, {"bob"})

    def test_clearing_an_address_forgets_every_failure_from_it(self):
        self.assertEqual(self.clearlogins("--address", "192.0.2.1"), "Cleared 7 failed sign-ins.\n")

        self.assertEqual(self.left(), [("bob", "198.51.100.7")])

    def test_clearing_a_user_at_an_address_forgets_only_those(self):
        self.assertEqual(self.clearlogins("--user", "bob", "--address", "198.51.100.7"), "Cleared 1 failed sign-in.\n")

        self.assertEqual(len(self.left()), 7)

    def test_clearing_without_arguments_forgets_every_failure(self):
        self.clearlogins()

        self.assertEqual(self.left(), [])

    def test_an_address_that_is_not_one_is_refused(self):
        with self.assertRaisesMessage(CommandError, "Not an IP address: 'nowhere'."):
            self.clearlogins("--address", "nowhere")


class SettingsTests(SimpleTestCase):
    def test_the_defaults_are_five_per_user_twenty_per_address_in_fifteen_minutes_and_a_minute_of_cache(self):
        self.assertEqual(
            (
                settings.LOGIN_FAILURES_PER_USER,
                settings.LOGIN_FAILURES_PER_ADDRESS,
                settings.LOGIN_LOCKOUT_SECONDS,
                settings.TRUSTED_PROXY_HOPS,
                settings.BASIC_AUTH_CACHE_SECONDS,
            ),
            (5, 20, 900, 0, 60),
        )

    def test_a_bad_value_stops_start_up_with_one_line_naming_the_variable(self):
        clean = {name: value for name, value in os.environ.items() if not name.startswith("PARSEQ_")}
        for variable, value in [
            ("PARSEQ_LOGIN_FAILURES_PER_USER", "0"),
            ("PARSEQ_LOGIN_LOCKOUT_SECONDS", "soon"),
            ("PARSEQ_BASIC_AUTH_CACHE_SECONDS", "-1"),
        ]:
            with self.subTest(variable=variable):
                result = subprocess.run(
                    [sys.executable, "manage.py", "check"],
                    cwd=settings.BASE_DIR,
                    env={**clean, "SECRET_KEY": "k", variable: value},
                    capture_output=True,
                    text=True,
                    timeout=60,
                )

                self.assertNotEqual(result.returncode, 0)
                self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
                self.assertIn(variable, result.stderr)
