"""Where Parseq connects on someone else's behalf: one address policy for the egress proxy and for webhooks.

A script's HTTP(S) (runner/egress.py) and a parser's webhook (parseq/alerts) go only
to the public internet. Refused: loopback, private, link-local (cloud metadata among
them), shared, multicast, broadcast and every range of IANA's IPv4 and IPv6
special-purpose registries (documentation and benchmarking ranges too), and, as a final
belt, whatever `ipaddress` says is not global. An IPv4 address carried inside an IPv6
one (IPv4-mapped, NAT64, 6to4) is judged as that IPv4 address; the deprecated or opaque
forms (IPv4-compatible, local-use NAT64, Teredo) are refused outright. Every address of
this host is refused too: a server bound to 0.0.0.0 answers on the host's public
address as well. An operator's allow-list of networks overrides all of it.

Imports nothing from Django: the sandbox runner uses it.
"""

import ipaddress
import socket
import threading
import time

# How long the host's own addresses are believed before /proc is read again: they change rarely.
LOCAL_ADDRESSES_TTL = 5.0
FIB_TRIE = "/proc/net/fib_trie"
IF_INET6 = "/proc/net/if_inet6"
IPV6_ROUTE = "/proc/net/ipv6_route"
RTF_LOCAL = 0x80000000

DOCUMENTATION = "a documentation address"
PRIVATE = "a private address"
AS112 = "an AS112 DNS address"

# (network, what an address in it is). The most specific network that holds an address names it.
IPV4_REFUSED = [
    ("0.0.0.0/8", "a 'this network' address (0.0.0.0/8)"),
    ("10.0.0.0/8", PRIVATE),
    ("100.64.0.0/10", "a shared address (carrier-grade NAT, 100.64.0.0/10)"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", PRIVATE),
    ("192.0.0.0/24", "an IETF protocol assignment (192.0.0.0/24)"),
    ("192.0.2.0/24", DOCUMENTATION),
    ("192.31.196.0/24", AS112),
    ("192.52.193.0/24", "an AMT relay address (192.52.193.0/24)"),
    ("192.88.99.0/24", "a deprecated 6to4 relay address (192.88.99.0/24)"),
    ("192.168.0.0/16", PRIVATE),
    ("192.175.48.0/24", AS112),
    ("198.18.0.0/15", "a benchmarking address (198.18.0.0/15)"),
    ("198.51.100.0/24", DOCUMENTATION),
    ("203.0.113.0/24", DOCUMENTATION),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address (240.0.0.0/4)"),
    ("255.255.255.255/32", "the broadcast address"),
]
IPV6_REFUSED = [
    ("::/128", "the unspecified address"),
    ("::1/128", "a loopback address"),
    ("::/96", "an IPv4-compatible address (deprecated, ::/96)"),
    ("64:ff9b:1::/48", "a local-use NAT64 address (64:ff9b:1::/48)"),
    ("100::/64", "a discard-only address (100::/64)"),
    ("100:0:0:1::/64", "a dummy prefix address (100:0:0:1::/64)"),
    ("2001::/23", "an IETF protocol assignment (2001::/23)"),
    ("2001::/32", "a Teredo tunnel address (2001::/32)"),
    ("2001:db8::/32", DOCUMENTATION),
    ("2620:4f:8000::/48", AS112),
    ("3fff::/20", DOCUMENTATION),
    ("5f00::/16", "an SRv6 segment identifier (5f00::/16)"),
    ("fc00::/7", "a unique local (private) address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address (deprecated)"),
    ("ff00::/8", "a multicast address"),
]
# IANA has given out only this much of the IPv6 space; the rest is reserved by the IETF.
IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
# Refused outright, though they carry an IPv4 address: deprecated, or the IPv4 is not where the packets go.
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
TEREDO = ipaddress.ip_network("2001::/32")


def _most_specific_first(table):
    networks = [(ipaddress.ip_network(network), what) for network, what in table]
    return sorted(networks, key=lambda entry: entry[0].prefixlen, reverse=True)


_REFUSED = {4: _most_specific_first(IPV4_REFUSED), 6: _most_specific_first(IPV6_REFUSED)}


class Refused(Exception):
    """A destination Parseq does not connect to; the message, for users, names the host, the address and why.

    `reason` is the why alone, when the policy refused an address ("127.0.0.1 is a loopback address").
    """

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason or message


class Unresolvable(Refused):
    """The name does not resolve (perhaps only for now); `reason` is the resolver's."""

    def __init__(self, host, reason):
        super().__init__(f"cannot resolve {host}: {reason}")
        self.host = host
        self.reason = reason


def refusal(address, *, allowed=(), refused=()):
    """Why connecting to `address` (text or an ipaddress object) is refused, or None when it is allowed.

    An address inside one of the `allowed` networks (ipaddress networks or CIDR texts) is
    allowed whatever it is, and so is an IPv6 address whose embedded IPv4 address is; one inside
    the `refused` networks (an operator's: the public address of a container's host, say) is
    refused whatever it is, and that wins.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"{address!r} is not an IP address"
    ip = ip if ip.version == 4 else ipaddress.IPv6Address(ip.packed)  # without a %scope
    embedded = embedded_ipv4(ip)
    candidates = [candidate for candidate in (ip, embedded) if candidate is not None]
    if any(candidate in network for candidate in candidates for network in as_networks(refused)):
        return f"{address} is in a network this Parseq's operator refuses"
    if any(candidate in network for candidate in candidates for network in as_networks(allowed)):
        return None
    if embedded is not None:
        what = _what_is(embedded)
        return f"{address} embeds {embedded}, {what}" if what else None
    what = _what_is(ip)
    return f"{address} is {what}" if what else None


def resolve(host, port, *, allowed=(), refused=()):
    """Resolve `host` once and return the (ip, port) to connect to, checked by `refusal`.

    Strict: one refused address refuses the name, so that no later lookup can pick the
    bad one. Raises Unresolvable when the name does not resolve, Refused when an address is refused.
    """
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise Unresolvable(host, error.strerror) from None
    except (UnicodeError, ValueError) as error:  # a label too long for IDNA, a NUL in the name
        raise Unresolvable(host, f"not a valid host name ({error})") from None
    if not infos:
        raise Unresolvable(host, "no address")
    for _, _, _, _, sockaddr in infos:
        reason = refusal(sockaddr[0], allowed=allowed, refused=refused)
        if reason is not None:
            raise Refused(f"connections to {authority(host, port)} are not allowed: {reason}", reason)
    return infos[0][4][:2]


def authority(host, port):
    """`host:port`, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def embedded_ipv4(ip):
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, NAT64 64:ff9b::/96, 6to4), or None."""
    if ip.version != 6:
        return None
    if ip in IPV4_MAPPED:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in SIX_TO_FOUR:
        return ip.sixtofour
    return None


def as_networks(allowed):
    """The allow-list as ipaddress networks (CIDR texts are parsed; host bits may be set)."""
    return [ipaddress.ip_network(network, strict=False) for network in allowed]


def _what_is(ip):
    """What makes `ip` a refused address ("a loopback address"...), or None when it is public."""
    for network, what in _REFUSED[ip.version]:
        if ip in network:
            return what + _carried(ip, network)
    if ip.version == 6 and ip not in IPV6_GLOBAL_UNICAST:
        return "a reserved address (outside the global unicast 2000::/3)"
    if any(ip in network for network in local_networks()):
        return "an address of this host"
    if not ip.is_global:
        return "not a global address"
    return None


def _carried(ip, network):
    """What an IPv6 form refused outright carries, for the message: ", embedding 127.0.0.1"."""
    if network == IPV4_COMPATIBLE:
        return f", embedding {ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)}"
    if network == TEREDO:
        server, client = ip.teredo
        return f", for {client} through the server {server}"
    return ""


_local = {"networks": frozenset(), "expires": 0.0}
_local_lock = threading.Lock()


def local_networks():
    """What this host answers on itself in the current network namespace, read from /proc, cached a few seconds.

    Its interfaces' addresses, and whole local routes (`ip route add local 9.9.9.0/24 dev lo`, an IPv6
    /64 that a scraping host rotates its addresses through): every address in them is this host.
    """
    with _local_lock:
        if time.monotonic() >= _local["expires"]:
            _local["networks"] = frozenset([*_read_ipv4_local(), *_read_ipv6_addresses(), *_read_ipv6_local_routes()])
            _local["expires"] = time.monotonic() + LOCAL_ADDRESSES_TTL
        return _local["networks"]


def _read_ipv4_local():
    """The `host LOCAL` entries of the kernel's routing trie, /32 (an interface's address) or wider (a local route)."""
    try:
        with open(FIB_TRIE, encoding="ascii") as trie:
            lines = trie.read().splitlines()
    except OSError:
        return  # no /proc (not Linux): only the ranges above hold
    last = None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("|-- "):
            last = stripped[4:]
        elif stripped.endswith(" host LOCAL") and stripped.startswith("/") and last:
            yield ipaddress.IPv4Network(f"{last}{stripped.split()[0]}", strict=False)


def _read_ipv6_addresses():
    """The IPv6 addresses of every interface: the first column of /proc/net/if_inet6, 32 hex digits."""
    try:
        with open(IF_INET6, encoding="ascii") as table:
            lines = table.read().splitlines()
    except OSError:
        return
    for line in lines:
        fields = line.split()
        if fields:
            yield ipaddress.IPv6Network((int(fields[0], 16), 128))


def _read_ipv6_local_routes():
    """The IPv6 routes of type local (flag RTF_LOCAL) in /proc/net/ipv6_route: destination, prefix length, ... flags."""
    try:
        with open(IPV6_ROUTE, encoding="ascii") as table:
            lines = table.read().splitlines()
    except OSError:
        return
    for line in lines:
        fields = line.split()
        if len(fields) >= 9 and int(fields[8], 16) & RTF_LOCAL:
            yield ipaddress.IPv6Network((int(fields[0], 16), int(fields[1], 16)), strict=False)
