"""Answer files (unattend.xml) of an offline image: passes, components, password leaks.

Data only: :func:`harness.extraction.unattend.parse_answer_file` fills these in from a file's bytes (with the
project's safe XML reader) and :func:`harness.extraction.unattend.answer_file_candidates` gives Windows Setup's
implicit search order. A :class:`PasswordLeak` says where a password is and how it is encoded, never what it is.
"""

from __future__ import annotations

from dataclasses import dataclass

UNATTEND_NAMESPACE = "urn:schemas-microsoft-com:unattend"
#: Configuration passes Windows Setup knows, in the order they run.
PASSES = ("windowsPE", "offlineServicing", "generalize", "specialize", "auditSystem", "auditUser", "oobeSystem")


@dataclass(frozen=True)
class AnswerComponent:
    pass_name: str | None  # None for a component outside any <settings>
    name: str | None
    processor_architecture: str | None
    location: str


@dataclass(frozen=True)
class PasswordLeak:
    """A password in an answer file, described without its value.

    ``element``: "AdministratorPassword", "AutoLogon/Password", "LocalAccount[Administrator]/Password",
    "Credentials/Password", "DomainAccounts" (a password under DomainAccounts, which the schema does
    not define), or "<Parent>/<Element>" for other ``*Password`` elements.
    ``plaintext``: PlainText is true or missing. ``reversible``: PlainText is false, so the value is
    base64(UTF-16LE(password + element name)), trivially decoded. ``encoding_confirmed``: for a
    reversible value, whether it decodes to UTF-16LE text ending in the element name (None when
    plain text). ``empty``: the value is empty (a blank password, a different problem).
    """

    element: str
    pass_name: str | None
    plaintext: bool
    reversible: bool
    location: str
    component: str | None = None
    empty: bool = False
    encoding_confirmed: bool | None = None


@dataclass(frozen=True)
class AnswerFile:
    path: str
    #: Passes with a <settings pass=...> element, in document order, each once.
    passes: tuple[str, ...] = ()
    components: tuple[AnswerComponent, ...] = ()
    password_leaks: tuple[PasswordLeak, ...] = ()
    namespace: str | None = None
    #: The root is <unattend> in the unattend namespace.
    is_unattend: bool = False
    #: Set when the file could not be parsed at all (then everything else is empty).
    problem: str | None = None
    #: Oddities that did not stop parsing (unknown pass names, wrong namespace, ...).
    notes: tuple[str, ...] = ()

    def components_in(self, pass_name: str) -> tuple[AnswerComponent, ...]:
        return tuple(c for c in self.components if c.pass_name == pass_name)
