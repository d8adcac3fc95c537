"""public_address_statement.md must list every public URL and IP address in the repository, and nothing else.

The scan covers what git would ship: tracked files plus untracked files that are not ignored
(`git ls-files -co --exclude-standard`), text files only. Loopback, private and placeholder addresses
(127.0.0.1, 10.x, localhost, `tcp://${ADDR}:...`) are not public and are not listed.
"""
import ipaddress
import os
import re
import subprocess

from conftest import REPO_ROOT

STATEMENT = "public_address_statement.md"

URL_RE = re.compile(r"\b(?:https?|ftp)://[^\s<>\"'`()\[\]{}\\|^]+")
IP_RE = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?![\w.])")
HOST_RE = re.compile(r"^[A-Za-z0-9.-]+$")
TRAILING = ".,;:!?*'\""


def _public_host(host):
    """False for loopback, private, link-local and unspecified IPs, localhost and placeholders."""
    if not host or not HOST_RE.match(host) or host == "localhost" or "." not in host:
        return False
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return True  # a domain name


def find_addresses(text):
    """The public URLs and bare IP addresses in `text`, in order of first appearance."""
    found = []
    for match in URL_RE.finditer(text):
        url = match.group(0).rstrip(TRAILING)
        host = url.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0].rsplit("@", 1)[-1]
        if _public_host(host) and url not in found:
            found.append(url)
    without_urls = URL_RE.sub(" ", text)
    for match in IP_RE.finditer(without_urls):
        address = match.group(1)
        try:
            public = ipaddress.ip_address(address).is_global
        except ValueError:  # an octet above 255: a version number or similar
            public = False
        if public and address not in found:
            found.append(address)
    return found


def repository_files():
    try:
        output = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                                capture_output=True, check=True).stdout.decode("utf-8")
        names = [name for name in output.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: walk the tree
        names = []
        for folder, dirs, files in os.walk(REPO_ROOT):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "output")]
            names.extend(os.path.relpath(os.path.join(folder, f), REPO_ROOT) for f in files)
    return sorted(name for name in names if os.path.isfile(os.path.join(REPO_ROOT, name)))


def read_text(path):
    with open(path, "rb") as handle:
        data = handle.read()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def scan_repository():
    """{(file, address)} over every text file except the statement itself."""
    pairs = set()
    for name in repository_files():
        if name == STATEMENT:
            continue
        text = read_text(os.path.join(REPO_ROOT, name))
        if text is None:
            continue
        for address in find_addresses(text):
            pairs.add((name.replace(os.sep, "/"), address))
    return pairs


def statement_rows():
    """{(file, address)} from the statement's table rows `| 文件位置 | 公网地址 | 公网地址用途 |`."""
    rows = set()
    with open(os.path.join(REPO_ROOT, STATEMENT), encoding="utf-8") as handle:
        for line in handle:
            cells = [cell.strip().strip("`").strip() for cell in line.strip().strip("|").split("|")]
            if not line.lstrip().startswith("|") or len(cells) < 3:
                continue
            if cells[0] == "文件位置" or set(cells[0]) <= set("-: "):
                continue
            rows.add((cells[0], cells[1]))
    return rows


def test_scanner_finds_public_addresses_only():
    scheme = "https" + "://"
    text = ("see ({0}example.org/a/b_c.html), and {0}docs.example.com/x?y=1. "
            "http" + "://127.0.0.1:8000/ tcp://10.0.0.1:29688 {0}localhost/x {0}${{HOST}}/y "
            "ip " + "8.8." + "4.4; private 192.168.1.2, version 1.8.0 or 2.1.0.post3, 300.1.2.3").format(scheme)
    assert find_addresses(text) == [scheme + "example.org/a/b_c.html", scheme + "docs.example.com/x?y=1",
                                   "8.8." + "4.4"]


def test_every_public_address_is_in_the_statement():
    missing = sorted(scan_repository() - statement_rows())
    assert not missing, "add these rows to {}:\n{}".format(
        STATEMENT, "\n".join("| {} | {} | <purpose> |".format(name, address) for name, address in missing))


def test_statement_lists_no_address_that_is_gone():
    stale = sorted(statement_rows() - scan_repository())
    assert not stale, "remove these rows from {} (no longer in the file):\n{}".format(
        STATEMENT, "\n".join("| {} | {} |".format(name, address) for name, address in stale))


def test_statement_rows_have_a_purpose():
    with open(os.path.join(REPO_ROOT, STATEMENT), encoding="utf-8") as handle:
        text = handle.read()
    assert "| 文件位置 | 公网地址 | 公网地址用途 |" in text
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 3 and "://" in cells[1]:
            assert cells[2], "row without a purpose: " + line
