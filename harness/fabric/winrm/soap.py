"""WS-Management SOAP for the WinRS ``windows/shell/cmd`` resource, as pywinrm 0.5.0 speaks it.

Parsing uses defusedxml.  Replies follow MS-WSMV (https://learn.microsoft.com/openspecs/windows_protocols/ms-wsmv/)
as Windows answers: every reply carries ``a:RelatesTo`` (the
request's ``a:MessageID``); Create answers ``x:ResourceCreated`` with a ``w:Selector Name="ShellId"`` plus
``rsp:Shell/rsp:ShellId``; Command answers ``rsp:CommandResponse/rsp:CommandId``; Receive answers base64
``rsp:Stream Name=...`` parts, ``End="true"`` markers and ``rsp:CommandState`` (Running, or Done with
``rsp:ExitCode``); faults are SOAP 1.2 faults with a ``f:WSManFault Code=...`` detail.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape, quoteattr

import defusedxml.ElementTree as DET

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_ADDR = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_WSMAN = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
NS_MSWSMAN = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd"
NS_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
NS_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
NS_FAULT = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"

RESOURCE_CMD = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"

ACTION_CREATE = NS_TRANSFER + "/Create"
ACTION_DELETE = NS_TRANSFER + "/Delete"
ACTION_COMMAND = NS_SHELL + "/Command"
ACTION_RECEIVE = NS_SHELL + "/Receive"
ACTION_SIGNAL = NS_SHELL + "/Signal"
ACTION_SEND = NS_SHELL + "/Send"
ACTION_FAULT = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"

STATE_DONE = NS_SHELL + "/CommandState/Done"
STATE_RUNNING = NS_SHELL + "/CommandState/Running"
SIGNAL_TERMINATE = NS_SHELL + "/signal/terminate"
SIGNAL_CTRL_C = NS_SHELL + "/signal/ctrl_c"

# WSMan fault codes (winerror.h ERROR_WSMAN_*)
CODE_TIMED_OUT = 2150858793  # 0x80338029
CODE_INVALID_SELECTORS = 2150858843  # 0x8033805B

_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


class SoapError(Exception):
    """A request that must be answered with a fault: HTTP status, SOAP code, WS-Man subcode, reason."""

    def __init__(
        self, status: int, code: str, subcode: str, reason: str, wsman_code: int | None = None, subcode_ns: str = ""
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.subcode = subcode
        self.reason = reason
        self.wsman_code = wsman_code
        self.subcode_ns = subcode_ns or NS_WSMAN


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def parse_duration(text: str | None, default: float) -> float:
    """``PT20S`` / ``PT20.000S`` / ``PT1M`` → seconds (xs:duration without years/months)."""
    if not text:
        return default
    m = _DURATION.match(text.strip())
    if not m or not any(m.groups()):
        return default
    days, hours, minutes, seconds = m.groups()
    try:
        return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)
    except ValueError:  # more digits than int() converts (found by fuzzing): as absent
        return default


@dataclass
class Request:
    action: str
    message_id: str
    resource_uri: str
    shell_id: str | None
    operation_timeout: float
    options: dict[str, str]
    body: Element | None
    root: Element = field(repr=False)

    # -- body accessors ---------------------------------------------------------------------------------
    def command_line(self) -> tuple[str, list[str]]:
        """``rsp:CommandLine`` → (Command, [Arguments...]) with surrounding whitespace/quotes as sent."""
        node = self.body.find(_q(NS_SHELL, "CommandLine")) if self.body is not None else None
        if node is None:
            raise SoapError(400, "s:Sender", "InvalidParameter", "The Command request has no rsp:CommandLine.")
        command = node.findtext(_q(NS_SHELL, "Command")) or ""
        args = [a.text or "" for a in node.findall(_q(NS_SHELL, "Arguments"))]
        return command, args

    def receive_command_id(self) -> str | None:
        node = self.body.find(_q(NS_SHELL, "Receive")) if self.body is not None else None
        stream = node.find(_q(NS_SHELL, "DesiredStream")) if node is not None else None
        return stream.get("CommandId") if stream is not None else None

    def desired_streams(self) -> list[str]:
        path = f"{_q(NS_SHELL, 'Receive')}/{_q(NS_SHELL, 'DesiredStream')}"
        node = self.body.find(path) if self.body is not None else None
        text = node.text if node is not None and node.text else "stdout stderr"
        return text.split()

    def signal(self) -> tuple[str | None, str]:
        node = self.body.find(_q(NS_SHELL, "Signal")) if self.body is not None else None
        if node is None:
            raise SoapError(400, "s:Sender", "InvalidParameter", "The Signal request has no rsp:Signal.")
        return node.get("CommandId"), (node.findtext(_q(NS_SHELL, "Code")) or "").strip()

    def send_streams(self) -> list[tuple[str | None, str, bytes, bool]]:
        node = self.body.find(_q(NS_SHELL, "Send")) if self.body is not None else None
        out = []
        for s in node.findall(_q(NS_SHELL, "Stream")) if node is not None else []:
            try:
                data = base64.b64decode(s.text or "", validate=False)
            except ValueError:  # binascii.Error: bad padding (found by fuzzing)
                raise SoapError(400, "s:Sender", "InvalidParameter", "The rsp:Stream is not valid base64.") from None
            out.append((s.get("CommandId"), s.get("Name") or "stdin", data, s.get("End", "").lower() == "true"))
        return out


def parse_request(data: bytes) -> Request:
    try:
        root = DET.fromstring(data)
    except Exception as exc:  # defusedxml raises ParseError or its own DefusedXmlException subclasses
        raise SoapError(400, "s:Sender", "SchemaValidationError", f"The SOAP XML is invalid: {exc}") from None
    if root.tag != _q(NS_SOAP, "Envelope"):
        raise SoapError(400, "s:Sender", "SchemaValidationError", "The request is not a SOAP 1.2 envelope.")
    header = root.find(_q(NS_SOAP, "Header"))
    body = root.find(_q(NS_SOAP, "Body"))
    if header is None:
        raise SoapError(400, "s:Sender", "SchemaValidationError", "The SOAP envelope has no Header.")
    action = (header.findtext(_q(NS_ADDR, "Action")) or "").strip()
    message_id = (header.findtext(_q(NS_ADDR, "MessageID")) or "").strip()
    resource_uri = (header.findtext(_q(NS_WSMAN, "ResourceURI")) or "").strip()
    shell_id = None
    selectors = header.find(_q(NS_WSMAN, "SelectorSet"))
    if selectors is not None:
        for sel in selectors.findall(_q(NS_WSMAN, "Selector")):
            if sel.get("Name") == "ShellId":
                shell_id = (sel.text or "").strip()
    options: dict[str, str] = {}
    option_set = header.find(_q(NS_WSMAN, "OptionSet"))
    if option_set is not None:
        for opt in option_set.findall(_q(NS_WSMAN, "Option")):
            if opt.get("Name"):
                options[opt.get("Name", "")] = (opt.text or "").strip()
    timeout = parse_duration(header.findtext(_q(NS_WSMAN, "OperationTimeout")), 60.0)
    return Request(
        action=action,
        message_id=message_id,
        resource_uri=resource_uri,
        shell_id=shell_id,
        operation_timeout=max(0.0, min(timeout, 3600.0)),
        options=options,
        body=body,
        root=root,
    )


# -- replies -------------------------------------------------------------------------------------------------


def _envelope(action: str, relates_to: str, body: str) -> bytes:
    relates = f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>" if relates_to else ""
    return (
        f'<s:Envelope xml:lang="en-US" xmlns:s="{NS_SOAP}" xmlns:a="{NS_ADDR}" xmlns:x="{NS_TRANSFER}" '
        f'xmlns:w="{NS_WSMAN}" xmlns:rsp="{NS_SHELL}" xmlns:p="{NS_MSWSMAN}">'
        f"<s:Header><a:Action>{escape(action)}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        f"<a:To>{ANONYMOUS}</a:To>{relates}</s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def create_response(req: Request, shell_id: str, address: str, owner: str, client_ip: str) -> bytes:
    body = (
        f"<x:ResourceCreated><a:Address>{escape(address)}</a:Address><a:ReferenceParameters>"
        f"<w:ResourceURI>{RESOURCE_CMD}</w:ResourceURI><w:SelectorSet>"
        f'<w:Selector Name="ShellId">{escape(shell_id)}</w:Selector></w:SelectorSet>'
        f"</a:ReferenceParameters></x:ResourceCreated>"
        f"<rsp:Shell><rsp:ShellId>{escape(shell_id)}</rsp:ShellId><rsp:ResourceUri>{RESOURCE_CMD}</rsp:ResourceUri>"
        f"<rsp:Owner>{escape(owner)}</rsp:Owner><rsp:ClientIP>{escape(client_ip)}</rsp:ClientIP>"
        f"<rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut><rsp:InputStreams>stdin</rsp:InputStreams>"
        f"<rsp:OutputStreams>stdout stderr</rsp:OutputStreams><rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime>"
        f"<rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>"
    )
    return _envelope(NS_TRANSFER + "/CreateResponse", req.message_id, body)


def command_response(req: Request, command_id: str) -> bytes:
    body = f"<rsp:CommandResponse><rsp:CommandId>{escape(command_id)}</rsp:CommandId></rsp:CommandResponse>"
    return _envelope(NS_SHELL + "/CommandResponse", req.message_id, body)


def receive_response(
    req: Request, command_id: str, chunks: list[tuple[str, bytes]], ended: list[str], exit_code: int | None
) -> bytes:
    """``chunks``: (stream name, data) in order; ``ended``: streams to mark ``End="true"``; ``exit_code``
    None means the command is still running."""
    cid = quoteattr(command_id)
    parts = [
        f'<rsp:Stream Name="{name}" CommandId={cid}>{base64.b64encode(data).decode("ascii")}</rsp:Stream>'
        for name, data in chunks
        if data
    ]
    parts += [f'<rsp:Stream Name="{name}" CommandId={cid} End="true"></rsp:Stream>' for name in ended]
    if exit_code is None:
        parts.append(f'<rsp:CommandState CommandId={cid} State="{STATE_RUNNING}"></rsp:CommandState>')
    else:
        parts.append(
            f'<rsp:CommandState CommandId={cid} State="{STATE_DONE}">'
            f"<rsp:ExitCode>{int(exit_code)}</rsp:ExitCode></rsp:CommandState>"
        )
    body = f'<rsp:ReceiveResponse SequenceID="0">{"".join(parts)}</rsp:ReceiveResponse>'
    return _envelope(NS_SHELL + "/ReceiveResponse", req.message_id, body)


def signal_response(req: Request) -> bytes:
    return _envelope(NS_SHELL + "/SignalResponse", req.message_id, "<rsp:SignalResponse/>")


def send_response(req: Request) -> bytes:
    return _envelope(NS_SHELL + "/SendResponse", req.message_id, "<rsp:SendResponse/>")


def delete_response(req: Request) -> bytes:
    return _envelope(NS_TRANSFER + "/DeleteResponse", req.message_id, "")


def fault_response(err: SoapError, relates_to: str = "", machine: str = "localhost") -> bytes:
    detail = ""
    if err.wsman_code is not None:
        detail = (
            f'<s:Detail><f:WSManFault xmlns:f="{NS_FAULT}" Code="{err.wsman_code}" Machine={quoteattr(machine)}>'
            f"<f:Message>{escape(err.reason)} </f:Message></f:WSManFault></s:Detail>"
        )
    subcode_prefix = "w" if err.subcode_ns == NS_WSMAN else "a"
    body = (
        f"<s:Fault><s:Code><s:Value>{err.code}</s:Value><s:Subcode><s:Value>{subcode_prefix}:{err.subcode}"
        f'</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{escape(err.reason)} </s:Text>'
        f"</s:Reason>{detail}</s:Fault>"
    )
    return _envelope(ACTION_FAULT, relates_to, body)


def timed_out() -> SoapError:
    return SoapError(
        500,
        "s:Receiver",
        "TimedOut",
        "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.",
        CODE_TIMED_OUT,
    )


def invalid_selectors() -> SoapError:
    return SoapError(
        400,
        "s:Sender",
        "InvalidSelectors",
        "The WS-Management service cannot process the request because the request contained invalid selectors "
        "for the resource.",
        CODE_INVALID_SELECTORS,
    )


def action_not_supported(action: str) -> SoapError:
    return SoapError(
        400,
        "s:Sender",
        "ActionNotSupported",
        f"The action is not supported by the service: {action}",
        subcode_ns=NS_ADDR,
    )
