"""HTTP Basic in the API: a verified password is not hashed again for a minute, and browsers get no Basic challenge."""

from unittest import mock

from django.test import RequestFactory, TestCase, override_settings
from rest_framework.request import Request

from parseq.access.authentication import BasicAuthentication, VerifiedCredentials, verified_credentials
from tests.access.helpers import API, COUNTING_PASSWORDS, counting_hashes, forget_verified_credentials, make_user
from tests.api.helpers import basic
from tests.helpers import ManualClock


@COUNTING_PASSWORDS
class VerifiedCredentialsTests(TestCase):
    def setUp(self):
        forget_verified_credentials(self)
        self.alice = make_user("alice", "alice-pass")

    def api(self, password="alice-pass", username="alice"):
        return self.client.get(API, **basic(username, password))

    def test_a_second_request_with_the_same_credentials_is_not_hashed_again(self):
        # Given alice signed in once through Basic
        with counting_hashes() as first:
            self.assertEqual(self.api().status_code, 200)

        # When she sends the same credentials again
        with counting_hashes() as second:
            response = self.api()

        # Then she is in, and only the first request hashed her password
        self.assertEqual(response.status_code, 200)
        self.assertEqual((first.count, second.count), (1, 0))

    def test_a_remembered_verification_costs_the_lockout_query_and_the_users_query_only(self):
        # Given alice's credentials verified once
        self.api()
        request = Request(RequestFactory().get(API, **basic("alice", "alice-pass")))

        # When they authenticate a request again, then two queries do it: the recent failures, and the user
        with self.assertNumQueries(2):
            user, _ = BasicAuthentication().authenticate(request)

        self.assertEqual(user, self.alice)

    def test_a_password_change_ends_the_remembered_verification_at_once(self):
        # Given alice's credentials remembered, then her password changed
        self.api()
        self.alice.set_password("new-pass")
        self.alice.save()

        # When the old and the new credentials come
        with counting_hashes() as hashes:
            old = self.api("alice-pass")
            new = self.api("new-pass")

        # Then the old ones are verified again and refused, and the new ones verified and accepted
        self.assertEqual((old.status_code, new.status_code), (401, 200))
        self.assertEqual(hashes.count, 2)

    def test_deactivating_a_user_ends_the_remembered_verification_at_once(self):
        # Given alice's credentials remembered, then her account deactivated
        self.api()
        self.alice.is_active = False
        self.alice.save()

        # When they come again, then they are refused
        self.assertEqual(self.api().status_code, 401)

    def test_a_renamed_user_is_not_signed_in_by_its_old_name_and_password(self):
        # Given alice's credentials remembered, then her account renamed and a new alice made (found by an attacker)
        self.api()
        self.alice.username = "alice-old"
        self.alice.save()
        newcomer = make_user("alice", "other-pass")

        # When the old credentials come again
        response = self.api()

        # Then they are verified again, against the new alice, and refused: nobody is signed in as the renamed user
        self.assertEqual(response.status_code, 401)
        self.assertEqual(self.api("other-pass").wsgi_request.user, newcomer)

    def test_a_different_password_is_verified_and_a_failure_is_never_remembered(self):
        # Given alice's right credentials remembered
        self.api()

        # When a wrong password comes twice
        with counting_hashes() as hashes:
            responses = [self.api("wrong"), self.api("wrong")]

        # Then each is hashed and refused
        self.assertEqual([response.status_code for response in responses], [401, 401])
        self.assertEqual(hashes.count, 2)

    def test_a_locked_out_user_is_refused_even_with_remembered_credentials(self):
        # Given alice's credentials remembered, then five failures for her
        self.api()
        for _ in range(5):
            self.api("wrong")

        # When the remembered credentials come, then the lockout wins
        self.assertEqual(self.api().status_code, 429)

    @override_settings(BASIC_AUTH_CACHE_SECONDS=0)
    def test_with_the_cache_at_zero_seconds_every_request_is_hashed(self):
        with counting_hashes() as hashes:
            responses = [self.api(), self.api()]

        self.assertEqual([response.status_code for response in responses], [200, 200])
        self.assertEqual(hashes.count, 2)
        self.assertEqual(len(verified_credentials), 0)

    @override_settings(BASIC_AUTH_CACHE_SECONDS=1)
    def test_a_remembered_verification_expires_after_the_cache_seconds(self):
        clock = ManualClock()
        with mock.patch.object(verified_credentials, "clock", clock):
            # Given alice's credentials verified
            self.api()

            # When they come again before the cache second is over, and then once it is
            clock.advance(0.75)
            with counting_hashes() as before:
                self.assertEqual(self.api().status_code, 200)
            clock.advance(0.25)
            with counting_hashes() as after:
                self.assertEqual(self.api().status_code, 200)

        # Then they are remembered until then, and hashed again after
        self.assertEqual((before.count, after.count), (0, 1))

    def test_the_cache_holds_neither_passwords_nor_password_hashes(self):
        self.api()

        held = repr(verified_credentials._verified)

        self.assertEqual(len(verified_credentials), 1)
        self.assertNotIn("alice-pass", held)
        self.assertNotIn(repr(b"alice-pass")[2:-1], held)
        self.assertNotIn(self.alice.password.rsplit("$", 1)[1], held)

    def test_the_cache_keeps_its_newest_entries_up_to_its_size(self):
        # Given a cache of three entries
        cache = VerifiedCredentials(entries=3)
        users = [make_user(f"user{number}", "pass") for number in range(4)]

        # When four users' verifications are remembered
        for user in users:
            cache.remember(cache.key(user.username, "pass"), user)

        # Then it holds three, and the oldest is the one forgotten
        self.assertEqual(len(cache), 3)
        self.assertIsNone(cache.recall(cache.key("user0", "pass"), 60, "user0"))
        self.assertEqual(
            [cache.recall(cache.key(user.username, "pass"), 60, user.username) for user in users[1:]], users[1:]
        )

    def test_two_processes_caches_share_no_key(self):
        self.assertNotEqual(
            VerifiedCredentials().key("alice", "alice-pass"), VerifiedCredentials().key("alice", "alice-pass")
        )

    def test_credentials_that_differ_only_in_where_username_ends_have_different_keys(self):
        self.assertNotEqual(verified_credentials.key("ab", "c"), verified_credentials.key("a", "bc"))


class ChallengeTests(TestCase):
    def test_an_api_client_without_credentials_is_asked_for_basic(self):
        for accept in [None, "*/*", "application/json"]:
            with self.subTest(accept=accept):
                headers = {"HTTP_ACCEPT": accept} if accept else {}
                response = self.client.get(API, **headers)

                self.assertEqual(response.status_code, 401)
                self.assertEqual(response["WWW-Authenticate"], 'Basic realm="api"')

    def test_a_browser_gets_401_without_a_basic_challenge_so_it_never_asks_for_and_keeps_a_password(self):
        page = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        for headers in [{"HTTP_ACCEPT": page}, {"HTTP_ACCEPT": "application/json", "HTTP_SEC_FETCH_MODE": "cors"}]:
            with self.subTest(headers=headers):
                response = self.client.get(API, **headers)

                self.assertEqual(response.status_code, 401)
                self.assertFalse(response["WWW-Authenticate"].lower().startswith("basic"), response["WWW-Authenticate"])
