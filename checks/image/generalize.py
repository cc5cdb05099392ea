"""Generalization rules (2xx): sysprep state, Setup values, logs, cached answer files, autologon."""

from __future__ import annotations

from collections.abc import Iterator

from harness.docs_sources import refs
from harness.engine.finding import Finding
from harness.engine.severity import Severity
from harness.facts.image import GENERALIZED_STATE, ImageFacts, ImageSubject, SysprepInfo

from ._base import AZURE_ONLY, BOTH, ImageRule, image_location

STATE_KEY = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Setup\\State\\ImageState"
STATE_INI = "C:\\Windows\\Setup\\State\\State.ini"
SETUP_KEY = "HKLM\\SYSTEM\\Setup"
SYSPREP = "%WINDIR%\\System32\\Sysprep\\sysprep.exe /generalize /oobe /shutdown"


def _state(sysprep: SysprepInfo) -> tuple[str | None, str]:
    """The image state and where it was read (the registry wins; State.ini when the registry has none)."""
    if sysprep.image_state_registry:
        return sysprep.image_state_registry.strip().upper(), STATE_KEY
    if sysprep.image_state_ini:
        return sysprep.image_state_ini.strip().upper(), STATE_INI
    return None, STATE_KEY


class _SysprepRule(ImageRule):
    parts = ("sysprep",)
    profiles = BOTH

    def sysprep(self, facts: ImageFacts) -> SysprepInfo:
        assert facts.sysprep is not None
        return facts.sysprep


class ImageSpecialized(_SysprepRule):
    """The image is specialized (in use, or sysprepped without /generalize), not generalized.

    ## What it does
    Reads `ImageState` (registry, else `State.ini`) and reports `IMAGE_STATE_COMPLETE`,
    `IMAGE_STATE_SPECIALIZE_RESEAL_TO_OOBE`, or no image state at all (never sysprepped).

    ## Why is this bad?
    A specialized image keeps its machine SID, computer name and DPAPI machine keys: every instance
    deployed from it is a clone, and the platform's provisioning answer file is not applied, so the
    role never reports Ready.

    ## Example
    `ImageState = IMAGE_STATE_COMPLETE` (the reference machine was shut down normally).

    ## Use instead
    Run `%WINDIR%\\System32\\Sysprep\\sysprep.exe /generalize /oobe /shutdown` and capture the disk
    without booting it again.

    ## References
    - Windows Setup States (ImageState): https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/windows-setup-states
    - Sysprep (Generalize) a Windows installation: https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/sysprep--generalize--a-windows-installation
    - Generalize a VM before creating an image (Azure): https://learn.microsoft.com/en-us/azure/virtual-machines/generalize
    """

    id = "VMR201"
    name = "image-specialized"
    references = refs("setup-states", "sysprep-generalize", "azure-generalize")
    severity = Severity.CRITICAL

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        state, where = _state(self.sysprep(facts))
        if state is None:
            yield self.finding(
                subject,
                where,
                f"no ImageState in the registry or State.ini: the image was never sysprepped; run {SYSPREP}",
            )
        elif state == "IMAGE_STATE_COMPLETE" or state.startswith("IMAGE_STATE_SPECIALIZE_RESEAL"):
            yield self.finding(
                subject,
                where,
                f"ImageState is {state}: the image is specialized; run {SYSPREP}",
                evidence={"ImageState": state},
            )


class ImageResealedToAudit(_SysprepRule):
    """The image was generalized to audit mode instead of OOBE.

    ## What it does
    Reports `IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT` or `IMAGE_STATE_SPECIALIZE_RESEAL_TO_AUDIT`.

    ## Why is this bad?
    An audit-mode image boots into the built-in Administrator's audit session and never runs the
    OOBE pass that applies the platform's answer file: provisioning hangs.

    ## Example
    `sysprep /generalize /audit`.

    ## Use instead
    `sysprep /generalize /oobe /shutdown`.

    ## References
    - Windows Setup States (ImageState): https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/windows-setup-states
    - Sysprep command-line options — /oobe and /audit: https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/sysprep-command-line-options
    """

    id = "VMR202"
    name = "image-resealed-to-audit"
    references = refs("setup-states", "sysprep-options")
    severity = Severity.HIGH

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        state, where = _state(self.sysprep(facts))
        if state is not None and state.endswith("_RESEAL_TO_AUDIT"):
            yield self.finding(subject, where, f"ImageState is {state}: boots to audit mode; reseal with {SYSPREP}")


class ImageUndeployable(_SysprepRule):
    """A setup or sysprep phase never completed: the image is in IMAGE_STATE_UNDEPLOYABLE.

    ## What it does
    Reports `ImageState = IMAGE_STATE_UNDEPLOYABLE`.

    ## Why is this bad?
    Offline, this state means sysprep or setup was interrupted or failed. The image will not boot
    through OOBE reliably.

    ## Example
    The reference machine lost power during `sysprep /generalize`.

    ## Use instead
    Read `Windows\\System32\\Sysprep\\Panther\\setuperr.log` on the reference machine, fix the cause
    and run sysprep again.

    ## References
    - Windows Setup States (ImageState) — IMAGE_STATE_UNDEPLOYABLE: https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/windows-setup-states
    """

    id = "VMR203"
    name = "image-undeployable"
    references = refs("setup-states")
    severity = Severity.CRITICAL

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        state, where = _state(self.sysprep(facts))
        if state == "IMAGE_STATE_UNDEPLOYABLE":
            yield self.finding(subject, where, "ImageState is IMAGE_STATE_UNDEPLOYABLE: a setup phase never completed")


class ImageStateDisagrees(_SysprepRule):
    """The registry's ImageState and State.ini disagree.

    ## What it does
    Compares `HKLM\\SOFTWARE\\...\\Setup\\State\\ImageState` with `[State] ImageState` in
    `%WINDIR%\\Setup\\State\\State.ini`; reports a difference, or one of them missing.

    ## Why is this bad?
    Sysprep writes both together. A difference means one was edited by hand or a run was
    interrupted between them: the image's real state is unknown.

    ## Example
    Registry `IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE`, State.ini `IMAGE_STATE_COMPLETE`.

    ## Use instead
    Run sysprep again on the reference machine rather than editing either value.

    ## References
    - Windows Setup States (ImageState) — the registry value and State.ini: https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/windows-setup-states
    """

    id = "VMR204"
    name = "image-state-disagrees"
    references = refs("setup-states")
    severity = Severity.HIGH

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        sp = self.sysprep(facts)
        reg = (sp.image_state_registry or "").strip().upper() or None
        ini = (sp.image_state_ini or "").strip().upper() or None
        if reg is None and ini is None:
            return
        if reg != ini:
            yield self.finding(
                subject,
                STATE_KEY,
                f"the registry says {reg or 'nothing'} but State.ini says "
                f"{ini or ('nothing' if sp.state_ini_found else 'nothing (file missing)')}",
                evidence={"registry": reg or "-", "State.ini": ini or "-"},
            )


class SetupValuesNotGeneralized(_SysprepRule):
    """The image claims to be generalized but SYSTEM\\Setup does not match a resealed image.

    ## What it does
    For a generalized image, checks `HKLM\\SYSTEM\\Setup`: `SystemSetupInProgress = 1`,
    `OOBEInProgress = 1`, `SetupType = 2`, `CmdLine = oobe\\windeploy.exe`.

    ## Why is this bad?
    These values make the first boot run windeploy (specialize + OOBE). Without them the image boots
    straight to a logon screen with the reference machine's identity, whatever ImageState says.

    ## Example
    `SetupType = 0` and `CmdLine = ""` after someone cleared them to "fix" a boot loop.

    ## Use instead
    Re-run sysprep /generalize /oobe; do not edit the Setup key by hand.

    ## References
    - Sysprep (Generalize) a Windows installation: https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/sysprep--generalize--a-windows-installation
    - Windows Setup States (ImageState): https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/windows-setup-states
    """

    id = "VMR205"
    name = "setup-values-not-generalized"
    references = refs("sysprep-generalize", "setup-states")
    severity = Severity.HIGH

    EXPECTED = (("SystemSetupInProgress", 1), ("OOBEInProgress", 1), ("SetupType", 2))

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        sp = self.sysprep(facts)
        state, _ = _state(sp)
        if state != GENERALIZED_STATE:
            return
        actual = {
            "SystemSetupInProgress": sp.system_setup_in_progress,
            "OOBEInProgress": sp.oobe_in_progress,
            "SetupType": sp.setup_type,
        }
        for name, expected in self.EXPECTED:
            if actual[name] != expected:
                yield self.finding(
                    subject,
                    f"{SETUP_KEY}\\{name}",
                    f"{name} is {actual[name] if actual[name] is not None else 'absent'}, expected {expected} "
                    "on a generalized image",
                )
        cmdline = (sp.cmdline or "").strip().lower()
        if cmdline != "oobe\\windeploy.exe":
            yield self.finding(
                subject,
                f"{SETUP_KEY}\\CmdLine",
                f"CmdLine is {sp.cmdline!r}, expected 'oobe\\windeploy.exe' on a generalized image",
            )


class GeneralizationStateUnexpected(_SysprepRule):
    """SysprepStatus\\GeneralizationState is not 4 (just generalized).

    ## What it does
    For a generalized image, reads `HKLM\\SYSTEM\\Setup\\Status\\SysprepStatus\\GeneralizationState`:
    4 is expected right after /generalize; 7 means the image booted since; other values (3 is reported
    as a failed generalize) are suspicious. Absent is a low-severity warning.

    ## Why is this bad?
    An image that booted after sysprep (7) has been specialized again, however ImageState looks.
    GeneralizationState itself is not documented: 4 and 7 are the values sysprep is seen to write
    after /generalize and after the next boot, so other values are reported for a person to judge.

    ## Example
    `GeneralizationState = 7`.

    ## Use instead
    Capture the disk right after sysprep shuts the machine down; never boot it in between.

    ## References
    - Sysprep (Generalize) a Windows installation: https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/sysprep--generalize--a-windows-installation
    - Windows Setup States (ImageState): https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/windows-setup-states
    """

    id = "VMR206"
    name = "generalization-state-unexpected"
    references = refs("sysprep-generalize", "setup-states")
    severity = Severity.MEDIUM

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        sp = self.sysprep(facts)
        state, _ = _state(sp)
        if state != GENERALIZED_STATE:
            return
        where = f"{SETUP_KEY}\\Status\\SysprepStatus\\GeneralizationState"
        if sp.generalization_state is None:
            yield self.finding(subject, where, "GeneralizationState is absent (expected 4)", severity=Severity.LOW)
        elif sp.generalization_state != 4:
            yield self.finding(
                subject,
                where,
                f"GeneralizationState is {sp.generalization_state}, expected 4 right after sysprep /generalize",
                evidence={"GeneralizationState": str(sp.generalization_state)},
            )


class SysprepNotConfirmed(_SysprepRule):
    """Sysprep's own evidence of success is missing, or its error log has errors.

    ## What it does
    For a generalized image: `Windows\\System32\\Sysprep\\Sysprep_succeeded.tag` must exist and
    `Windows\\System32\\Sysprep\\Panther\\setuperr.log` must hold no error lines.

    ## Why is this bad?
    Sysprep writes the tag only when it succeeds. A missing tag with a "generalized" state means the
    state was written by hand or copied from another image.

    ## Example
    ImageState says generalized, no Sysprep_succeeded.tag.

    ## Use instead
    Run sysprep again and keep the disk as sysprep left it.

    ## References
    - Sysprep (Generalize) a Windows installation: https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/sysprep--generalize--a-windows-installation
    - Sysprep command-line options: https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/sysprep-command-line-options
    """

    id = "VMR207"
    name = "sysprep-not-confirmed"
    references = refs("sysprep-generalize", "sysprep-options")
    severity = Severity.MEDIUM

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        sp = self.sysprep(facts)
        state, _ = _state(sp)
        if state != GENERALIZED_STATE:
            return
        if not sp.succeeded_tag:
            yield self.finding(
                subject,
                "C:\\Windows\\System32\\Sysprep\\Sysprep_succeeded.tag",
                "Sysprep_succeeded.tag is missing although the image state says generalized",
            )
        if sp.setuperr_error_lines:
            yield self.finding(
                subject,
                "C:\\Windows\\System32\\Sysprep\\Panther\\setuperr.log",
                f"sysprep's setuperr.log has {sp.setuperr_error_lines} error line(s): read it before uploading",
                severity=Severity.LOW,
            )


class CachedPantherAnswerFile(_SysprepRule):
    """A cached answer file in %WINDIR%\\Panther would override Azure's provisioning.

    ## What it does
    Azure profile: reports `unattend.xml` / `autounattend.xml` files in `C:\\Windows\\Panther` (and
    `Panther\\Unattend`).

    ## Why is this bad?
    Windows Setup finds the cached answer file before Azure's injected one, so the VM ignores the
    administrator name, password and other settings given at deployment.

    ## Example
    `C:\\Windows\\Panther\\unattend.xml` left by the `sysprep /unattend:` run that built the image.

    ## Use instead
    Delete `C:\\Windows\\Panther` before running sysprep.

    ## References
    - Windows Setup Automation Overview (answer file search order) — the Panther folder is searched early: https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/windows-setup-automation-overview
    - Generalize a VM before creating an image (Azure) — delete the Panther folder before sysprep: https://learn.microsoft.com/en-us/azure/virtual-machines/generalize
    """

    id = "VMR208"
    name = "cached-panther-answer-file"
    references = refs("setup-automation", "azure-generalize")
    severity = Severity.HIGH
    profiles = AZURE_ONLY
    parts = ("answer files",)

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        for _position, path in facts.answer_file_order:
            if path.lower().startswith("\\windows\\panther\\"):
                yield self.finding(
                    subject,
                    "C:" + path,
                    f"cached answer file C:{path} overrides Azure's provisioning answer file: delete "
                    "C:\\Windows\\Panther before sysprep",
                )


class AutologonPassword(ImageRule):
    """An autologon password is stored in plain text in the registry.

    ## What it does
    Reports a non-empty `DefaultPassword` under
    `HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Winlogon`. The value is never read into
    the report.

    ## Why is this bad?
    Anyone who can read the image (or the SOFTWARE hive of any instance) reads the password in plain
    text; every instance deployed from the image logs on automatically with it.

    ## Example
    `AutoAdminLogon = 1`, `DefaultUserName = Administrator`, `DefaultPassword = …`.

    ## Use instead
    Delete `DefaultPassword` and `AutoAdminLogon` before sysprep; use a scheduled task or a service
    for unattended work, and change the exposed password.

    ## References
    - Turn on automatic logon in Windows (Winlogon DefaultPassword) — DefaultPassword is stored in clear text: https://learn.microsoft.com/en-us/troubleshoot/windows-server/user-profiles-and-logon/turn-on-automatic-logon
    - Microsoft-Windows-Shell-Setup | AutoLogon (unattend reference): https://learn.microsoft.com/en-us/windows-hardware/customize/desktop/unattend/microsoft-windows-shell-setup-autologon
    """

    id = "VMR211"
    name = "autologon-password"
    severity = Severity.CRITICAL
    waivable = False
    profiles = BOTH
    parts = ("winlogon",)
    tags = ("secrets",)
    references = refs("winlogon-autologon", "unattend-autologon")

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        winlogon = facts.winlogon
        assert winlogon is not None
        if winlogon.default_password_present:
            yield self.finding(
                subject,
                f"{winlogon.location}\\DefaultPassword",
                "a plain-text autologon DefaultPassword is stored in the image: delete it and change that password",
                evidence={"AutoAdminLogon": winlogon.auto_admin_logon or "-"},
            )


class _AnswerFileRule(ImageRule):
    parts = ("answer files",)
    profiles = BOTH


class AnswerFilePlaintextPassword(_AnswerFileRule):
    """An answer file in the image holds a password in plain text.

    ## What it does
    Reads every answer file Windows Setup would find (registry `UnattendFile`, `Windows\\Panther`,
    `Windows\\System32\\Sysprep`, the volume root) and reports password elements
    (`AdministratorPassword`, `AutoLogon/Password`, `LocalAccount/Password`, …) with
    `<PlainText>true</PlainText>` or no PlainText element. The value is never read into the report.

    ## Why is this bad?
    The file ships in every copy of the VHD; anyone with read access to the image or an instance's
    system drive has the administrator password of every instance.

    ## Example
    ```xml
    <AdministratorPassword><Value>P@ssw0rd</Value><PlainText>true</PlainText></AdministratorPassword>
    ```

    ## Use instead
    Leave passwords out of answer files baked into the image: the platform supplies the
    administrator password at provisioning. Change any password that was exposed.

    ## References
    - Hide sensitive data in an answer file: https://learn.microsoft.com/en-us/windows-hardware/customize/desktop/wsim/hide-sensitive-data-in-an-answer-file
    - Windows Setup Automation Overview (answer file search order): https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/windows-setup-automation-overview
    """

    id = "VMR209"
    name = "answer-file-plaintext-password"
    references = refs("hide-answer-file-secrets", "setup-automation")
    severity = Severity.CRITICAL
    waivable = False
    tags = ("secrets",)

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        for answer in facts.answer_files:
            for leak in answer.password_leaks:
                if leak.plaintext and not leak.empty:
                    yield self.finding(
                        subject,
                        f"C:{answer.path}!{leak.location}",
                        f"{leak.element} in C:{answer.path} ({leak.pass_name or 'no pass'}) is a plain-text password: "
                        "remove it from the image and change it",
                        evidence={"element": leak.element, "pass": leak.pass_name or "-"},
                    )


class AnswerFileReversiblePassword(_AnswerFileRule):
    """An answer file holds a password "hidden" with PlainText=false, which is only base64.

    ## What it does
    Reports password elements with `<PlainText>false</PlainText>`: Windows SIM stores them as
    base64(UTF-16LE(password + element name)), which anyone can decode.

    ## Why is this bad?
    It looks protected and is not: the password of every instance is one `base64 -d` away.

    ## Example
    ```xml
    <AdministratorPassword><Value>UABAAHMAcwB3ADAAcgBkAEEAZABtAGkAbgBpAHMAdAByAGEAdABvAHIAUABhAHMAcwB3AG8AcgBkAA==</Value>
    <PlainText>false</PlainText></AdministratorPassword>
    ```

    ## Use instead
    Remove the password from the baked-in answer file; let the platform provide it. Change it.

    ## References
    - Hide sensitive data in an answer file — hiding is an encoding, not encryption: https://learn.microsoft.com/en-us/windows-hardware/customize/desktop/wsim/hide-sensitive-data-in-an-answer-file
    """

    id = "VMR210"
    name = "answer-file-reversible-password"
    references = refs("hide-answer-file-secrets")
    severity = Severity.HIGH
    waivable = False
    tags = ("secrets",)

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        for answer in facts.answer_files:
            for leak in answer.password_leaks:
                if leak.reversible and not leak.empty:
                    confirmed = {True: "yes", False: "no", None: "-"}[leak.encoding_confirmed]
                    yield self.finding(
                        subject,
                        f"C:{answer.path}!{leak.location}",
                        f"{leak.element} in C:{answer.path} is only base64-encoded (PlainText=false): remove it and "
                        "change the password",
                        evidence={"element": leak.element, "decodes as Setup's encoding": confirmed},
                    )


class CustomAnswerFileOnAzure(_AnswerFileRule):
    """An Azure image carries its own answer file, which Azure does not support.

    ## What it does
    Azure profile: reports answer files at the volume root, in `Windows\\System32\\Sysprep`, or named
    by `HKLM\\SYSTEM\\Setup\\UnattendFile` (cached ones in `Windows\\Panther` are VMR208).

    ## Why is this bad?
    Azure injects its own answer file at provisioning; a custom one competes with it and either
    overrides the deployment's settings or breaks provisioning.

    ## Example
    `C:\\unattend.xml` left from building the image for the VM role.

    ## Use instead
    Delete it before sysprep; put deployment-time settings in `additionalUnattendContent`.

    ## References
    - Generalize a VM before creating an image (Azure) — no custom answer file in the sysprep step: https://learn.microsoft.com/en-us/azure/virtual-machines/generalize
    - Prepare a Windows VHD or VHDX to upload to Azure: https://learn.microsoft.com/en-us/azure/virtual-machines/windows/prepare-for-upload-vhd-image
    """

    id = "VMR212"
    name = "custom-answer-file-on-azure"
    references = refs("azure-generalize", "azure-prepare-vhd")
    severity = Severity.MEDIUM
    profiles = AZURE_ONLY

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        for _position, path in facts.answer_file_order:
            if path.lower().startswith("\\windows\\panther\\"):
                continue
            yield self.finding(
                subject, f"C:{path}", f"answer file C:{path} competes with Azure's provisioning answer file: delete it"
            )


class EncryptedFileNotChecked(ImageRule):
    """A file the lint had to read is EFS-encrypted: its content was not checked, and instances cannot read it.

    ## What it does
    Names each file the image checks needed to read (answer files, key-material candidates, stores, …)
    whose data is encrypted with the Encrypting File System (the `$EFS` stream, an encrypted `$DATA`
    attribute or `FILE_ATTRIBUTE_ENCRYPTED`). Such a file is reported here, not as damage (VMR002).

    ## Why is this bad?
    EFS encrypts a file with a key only the encrypting user's certificate (or a recovery agent) can
    unwrap. On a generalized image deployed to new instances, that file is unreadable unless the
    user's EFS certificate and private key ship in the image too, which is itself a leaked secret.
    Either way the lint cannot see what the file holds: a password in an encrypted answer file goes
    unchecked.

    ## Example
    `C:\\unattend.xml` encrypted with `cipher /e` on the reference machine.

    ## Use instead
    Decrypt the file before sysprep (`cipher /d <file>`) or remove it; keep secrets out of the image.

    ## References
    - File Encryption (EFS, Win32): https://learn.microsoft.com/en-us/windows/win32/fileio/file-encryption
    - Sysprep (Generalize) a Windows installation: https://learn.microsoft.com/en-us/windows-hardware/manufacture/desktop/sysprep--generalize--a-windows-installation
    """

    id = "VMR213"
    name = "encrypted-file-not-checked"
    references = refs("efs", "sysprep-generalize")
    severity = Severity.MEDIUM
    parts = ("volume",)

    def judge(self, subject: ImageSubject, facts: ImageFacts) -> Iterator[Finding]:
        for path in facts.encrypted_files:
            location = image_location(path)
            yield self.finding(
                subject,
                location,
                f"{location} is EFS-encrypted: its content was not checked, and new instances cannot "
                "read it without the encrypting user's key: decrypt it (cipher /d) or remove it before sysprep",
                evidence={"path": location},
            )
