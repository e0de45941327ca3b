"""Loading and checking a set of manifests: files and folders of multi-document YAML.

`trunkline validate` and `trunkline up` use this; so does the control service when it is fed from
files. Every problem names the file, the document (1-based) and the field, so a user can fix it at
once.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trunkline.core.models import DID, Carrier, Resource, Secret, Trunk, parse_resource

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class DocumentSource:
    """Where a document came from."""

    file: str
    document: int  # 1-based index within the file; 0 for the file as a whole

    def __str__(self) -> str:
        return f"{self.file} (document {self.document})" if self.document else self.file


@dataclass(frozen=True)
class ManifestProblem:
    source: DocumentSource | None
    field: str  # dotted path inside the document, "" for the whole document
    message: str

    def __str__(self) -> str:
        where = str(self.source) if self.source else "<config>"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


@dataclass
class ConfigSet:
    """A consistent set of resources: what the edge, media and control planes run from."""

    trunks: dict[Key, Trunk] = field(default_factory=dict)
    dids: dict[Key, DID] = field(default_factory=dict)
    carriers: dict[Key, Carrier] = field(default_factory=dict)
    secrets: dict[Key, Secret] = field(default_factory=dict)
    sources: dict[tuple[str, Key], DocumentSource] = field(default_factory=dict)

    def add(self, item: Resource | Secret, source: DocumentSource | None = None) -> ManifestProblem | None:
        tables: dict[str, dict[Key, Any]] = {
            "Trunk": self.trunks, "DID": self.dids, "Carrier": self.carriers, "Secret": self.secrets,
        }  # fmt: skip
        table = tables[item.KIND]
        if item.key in table:
            first = self.sources.get((item.KIND, item.key))
            message = f"{item.KIND} {item.name!r} is defined twice (first in {first})"
            return ManifestProblem(source, "metadata.name", message)
        table[item.key] = item
        if source:
            self.sources[(item.KIND, item.key)] = source
        return None

    def source_of(self, item: Resource | Secret) -> DocumentSource | None:
        return self.sources.get((item.KIND, item.key))

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        secret = self.secrets.get((namespace, name))
        return secret.get(key) if secret else None

    def summary(self) -> str:
        return (
            f"{len(self.trunks)} trunk(s), {len(self.dids)} DID(s), {len(self.carriers)} carrier(s), "
            f"{len(self.secrets)} secret(s)"
        )


def manifest_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[ManifestProblem]]:
    """Expand files and folders (every *.yaml / *.yml inside, sorted) into a list of files."""
    files: list[Path] = []
    problems: list[ManifestProblem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                problems.append(
                    ManifestProblem(DocumentSource(str(path), 0), "", "folder holds no *.yaml or *.yml file")
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append(ManifestProblem(DocumentSource(str(path), 0), "", "no such file or folder"))
    return files, problems


def _documents(path: Path) -> Iterator[tuple[DocumentSource, Any] | ManifestProblem]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        yield ManifestProblem(DocumentSource(str(path), 0), "", f"cannot read: {exc}")
        return
    index = 0
    try:
        for index, doc in enumerate(yaml.safe_load_all(text), start=1):
            if doc is not None:
                yield DocumentSource(str(path), index), doc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        yield ManifestProblem(DocumentSource(str(path), index + 1), "", f"invalid YAML{line}: {problem}")


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item.startswith(("function-after", "function-before")) or "[" in item:
            continue  # pydantic's validator frames, not fields
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts)


def _pydantic_problems(source: DocumentSource, exc: ValidationError) -> list[ManifestProblem]:
    problems = []
    for err in exc.errors(include_url=False):
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] not in ("missing", "extra_forbidden") and "input" in err:
            message += f" (got {err['input']!r})"
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(ManifestProblem(source, _field_path(err["loc"]), message))
    return problems


def parse_documents(items: Iterable[tuple[DocumentSource, Any]]) -> tuple[ConfigSet, list[ManifestProblem]]:
    config = ConfigSet()
    problems: list[ManifestProblem] = []
    for source, doc in items:
        if not isinstance(doc, dict):
            problems.append(
                ManifestProblem(source, "", f"a manifest must be a mapping, got {type(doc).__name__}")
            )
            continue
        try:
            item = parse_resource(doc)
        except KeyError:
            kind = f"{doc.get('apiVersion', '?')}/{doc.get('kind', '?')}"
            expected = "trunkline.io/v1alpha1 Trunk, DID or Carrier, or v1 Secret"
            problems.append(ManifestProblem(source, "kind", f"unknown kind {kind} (expected {expected})"))
            continue
        except ValidationError as exc:
            problems.extend(_pydantic_problems(source, exc))
            continue
        duplicate = config.add(item, source)
        if duplicate:
            problems.append(duplicate)
    return config, problems


def check_references(config: ConfigSet) -> list[ManifestProblem]:
    """What no single document can say: claims, references, secrets, unique usernames."""
    problems: list[ManifestProblem] = []

    def problem(item: Resource | Secret, path: str, message: str) -> None:
        problems.append(ManifestProblem(config.source_of(item), path, message))

    claims: dict[str, list[DID]] = defaultdict(list)
    for did in config.dids.values():
        claims[did.spec.number].append(did)
        if (did.metadata.namespace, did.spec.trunkRef) not in config.trunks:
            problem(did, "spec.trunkRef", f"no Trunk named {did.spec.trunkRef!r}")
    for number, dids in claims.items():
        for did in dids[1:]:
            problem(did, "spec.number", f"{number} is already claimed by DID {dids[0].name!r}")

    usernames: dict[str, Trunk] = {}
    for trunk in config.trunks.values():
        digest = trunk.spec.auth.digest
        if digest is None:
            continue
        ns = trunk.metadata.namespace
        secret = config.secrets.get((ns, digest.credentialsSecret))
        path = "spec.auth.digest.credentialsSecret"
        if secret is None:
            problem(trunk, path, f"no Secret named {digest.credentialsSecret!r}")
            continue
        username, password = secret.get("username"), secret.get("password")
        if not username or not password:
            problem(trunk, path, f"Secret {secret.name!r} needs keys 'username' and 'password'")
            continue
        if username in usernames:
            problem(
                trunk,
                path,
                f"digest username {username!r} is already used by Trunk {usernames[username].name!r}",
            )
        usernames[username] = trunk

    for carrier in config.carriers.values():
        auth, registration = carrier.spec.auth, carrier.spec.registration
        if registration.enabled and auth is None and registration.user is None:
            problem(carrier, "spec.registration", "registering needs spec.auth (credentials) or a user")
        if auth is None:
            continue
        secret = config.secrets.get((carrier.metadata.namespace, auth.credentialsSecret))
        if secret is None:
            problem(carrier, "spec.auth.credentialsSecret", f"no Secret named {auth.credentialsSecret!r}")
        elif not secret.get("username") or not secret.get("password"):
            # The edge answers the carrier's challenges with both (docs/carriers.md).
            problem(carrier, "spec.auth.credentialsSecret",
                    f"Secret {secret.name!r} needs keys 'username' and 'password'")  # fmt: skip
    return problems


# An ACL or carrier network wider than this admits too many strangers without a challenge.
_WIDEST_PREFIX = {4: 16, 6: 32}
# Ranges that international revenue share fraud lives on: global services with no country (satellite
# +881, international networks +882/+883) and international premium rate (+979).
HIGH_RISK_PREFIXES = ("+881", "+882", "+883", "+979")


def security_warnings(config: ConfigSet) -> list[ManifestProblem]:
    """Valid but wide-open settings (docs/security.md): `trunkline validate` prints them, they do not
    fail it. A Trunk that writes down "unlimited" (channels: 0, callsPerSecond: 0) or lets callers
    reach every number ("+") or a high-risk range: a stolen credential on it can place calls to
    premium-rate numbers, as fast as it likes. Unset caps are not warned about: the platform's
    defaults hold them (core/trunk_defaults.py)."""
    warnings: list[ManifestProblem] = []

    def warn(item: Resource, path: str, message: str) -> None:
        warnings.append(ManifestProblem(config.source_of(item), path, f"warning: {message}"))

    def wide(item: Resource, path: str, cidrs: list[str], what: str) -> None:
        for cidr in cidrs:
            net = ipaddress.ip_network(cidr, strict=False)
            if net.prefixlen < _WIDEST_PREFIX[net.version]:
                warn(item, path, f"{cidr} {what} {net.num_addresses:,} addresses")

    for trunk in config.trunks.values():
        spec = trunk.spec
        if spec.channels == 0:
            warn(trunk, "spec.channels", "0: unlimited concurrent calls (e.g. channels: 30)")
        if spec.callsPerSecond == 0:
            warn(trunk, "spec.callsPerSecond", "0: unlimited call rate (e.g. callsPerSecond: 5)")
        for prefix in spec.outbound.allowedPrefixes or []:
            risky = [r for r in HIGH_RISK_PREFIXES if r.startswith(prefix) or prefix.startswith(r)]
            if prefix == "+":
                warn(trunk, "spec.outbound.allowedPrefixes",
                     "\"+\": this trunk may call any number in the world, premium-rate included; "
                     "list the countries it needs (e.g. [\"+1\", \"+44\"])")  # fmt: skip
            elif risky:
                warn(
                    trunk,
                    "spec.outbound.allowedPrefixes",
                    f"{prefix} opens {', '.join(risky)}: ranges of international premium-rate fraud",
                )
        if spec.auth.digest is not None and spec.auth.digest.allowRfc2069:
            warn(trunk, "spec.auth.digest.allowRfc2069", "true: credentials without qop=auth are accepted")
        wide(trunk, "spec.auth.ipAcl", spec.auth.ipAcl, "lets in, without a challenge,")
    for carrier in config.carriers.values():
        wide(carrier, "spec.inboundCidrs", carrier.spec.inboundCidrs, "lets call our DIDs")
    carriers = config.carriers.values()
    if config.trunks and not any(c.spec.emergency or not c.spec.prefixes for c in carriers):
        message = ("no Carrier can take emergency calls (911, 112, ...): mark one `spec.emergency: true` "
                   "or give one no prefixes (the default route); docs/emergency.md")  # fmt: skip
        warnings.append(ManifestProblem(None, "", f"warning: {message}"))
    return warnings


def load(paths: Iterable[str | Path]) -> tuple[ConfigSet, list[ManifestProblem]]:
    """Read, parse and check manifests. The set is usable only when the problem list is empty."""
    files, problems = manifest_files(paths)
    documents: list[tuple[DocumentSource, Any]] = []
    for path in files:
        for entry in _documents(path):
            if isinstance(entry, ManifestProblem):
                problems.append(entry)
            else:
                documents.append(entry)
    config, parse_problems = parse_documents(documents)
    problems.extend(parse_problems)
    if not problems:
        problems.extend(check_references(config))
    return config, problems
