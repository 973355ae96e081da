#!/usr/bin/env python3
"""The gRPC Management API driven by a client written by someone else: Python's grpcio, with
the stubs compiled here, by grpcio-tools, from the same Protos/ the server was generated from.

Run by GRPCProcessTests against a real `cmk serve` (SoftHSM token, one `cmk node`). Each step
prints a line the test looks for; any failed expectation exits non-zero with its reason.

Credentials come in the environment: CMK_ADMIN_TOKEN / CMK_AUDITOR_TOKEN / CMK_OPERATOR_TOKEN
(automation tokens), CMK_ADMIN_COOKIE + CMK_ADMIN_CSRF and CMK_BOB_COOKIE + CMK_BOB_CSRF
(sessions of two security administrators, logged in with a one-time code moments before).
"""
import argparse
import base64
import hashlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

parser = argparse.ArgumentParser()
parser.add_argument("--grpc", required=True, help="host:port of the gRPC listener")
parser.add_argument("--base", required=True, help="the REST base URL of the same server")
parser.add_argument("--node", required=True, help="the node's application API base URL")
parser.add_argument("--node-pid", type=int, required=True)
parser.add_argument("--cmk", required=True, help="the cmk executable (for cmk audit verify)")
parser.add_argument("--protos", required=True, help="the repository's Protos/ folder")
args = parser.parse_args()

env = os.environ
ADMIN, AUDITOR, OPERATOR = env["CMK_ADMIN_TOKEN"], env["CMK_AUDITOR_TOKEN"], env["CMK_OPERATOR_TOKEN"]
ADMIN_SESSION = (env["CMK_ADMIN_COOKIE"], env["CMK_ADMIN_CSRF"])
BOB_SESSION = (env["CMK_BOB_COOKIE"], env["CMK_BOB_CSRF"])


def fail(message):
    print("FAILED: " + message, flush=True)
    sys.exit(1)


def expect(condition, message):
    if not condition:
        fail(message)


def step(text):
    print(text, flush=True)


# --- The stubs, compiled now from the repository's .proto files --------------------------------
out = tempfile.mkdtemp(prefix="cmk-grpc-py-")
from grpc_tools import protoc  # noqa: E402

include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
ours = sorted(os.path.relpath(os.path.join(root, name), args.protos)
              for root, _, names in os.walk(os.path.join(args.protos, "openkcm")) for name in names if name.endswith(".proto"))
# google/api/field_behavior.proto is imported from googleapis-common-protos (the same
# definition), so that the descriptor pool holds it once.
status = protoc.main(["protoc", "-I", args.protos, "-I", include, "--python_out", out, "--grpc_python_out", out] + ours)
expect(status == 0, f"grpc_tools.protoc failed ({status})")
sys.path.append(out)
pb = {name: importlib.import_module(f"openkcm.cmk.v1.{name}_pb2") for name in
      ["tenants", "keystores", "links", "approvals", "nodes", "audit"]}
stubs = {name: importlib.import_module(f"openkcm.cmk.v1.{name}_pb2_grpc") for name in pb}
step(f"compiled {len(ours)} proto files with grpcio-tools")

channel = grpc.insecure_channel(args.grpc)
grpc.channel_ready_future(channel).result(timeout=20)
tenants = stubs["tenants"].TenantServiceStub(channel)
keystores = stubs["keystores"].KeystoreServiceStub(channel)
links = stubs["links"].L1LinkServiceStub(channel)
approvals = stubs["approvals"].ApprovalServiceStub(channel)
nodes = stubs["nodes"].NodeServiceStub(channel)
audit = stubs["audit"].AuditServiceStub(channel)
T, K, L, A, N, AU = (pb[n] for n in ["tenants", "keystores", "links", "approvals", "nodes", "audit"])


def token(value):
    return [("authorization", "Bearer " + value)]


def session(pair):
    return [("cookie", "cmk_session=" + pair[0]), ("x-csrf-token", pair[1])]


def refused(call, code, reason, text=None):
    """Calls `call`; expects it to fail with `code` and our `reason` in the error's details."""
    try:
        call()
    except grpc.RpcError as error:
        expect(error.code() == code, f"{text or reason}: expected {code}, got {error.code()} {error.details()}")
        expect(error.code() != grpc.StatusCode.UNKNOWN, "never UNKNOWN")
        status = rpc_status.from_call(error)
        expect(status is not None, f"{reason}: no google.rpc.Status in the trailers")
        infos, requests, probes = [], [], []
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                infos.append(info)
            elif detail.Is(error_details_pb2.RequestInfo.DESCRIPTOR):
                request = error_details_pb2.RequestInfo()
                detail.Unpack(request)
                requests.append(request)
            elif detail.Is(L.ProbeReport.DESCRIPTOR):
                report = L.ProbeReport()
                detail.Unpack(report)
                probes.append(report)
        expect(len(infos) == 1 and infos[0].reason == reason and infos[0].domain == "cmk.openkcm.io"
               and infos[0].metadata["code"] == reason.lower(), f"{reason}: ErrorInfo {infos}")
        expect(len(requests) == 1 and len(requests[0].request_id) == 32, f"{reason}: RequestInfo {requests}")
        return error, probes
    fail(f"{text or reason}: the call succeeded")


def rest(method, path, body=None, bearer=ADMIN):
    request = urllib.request.Request(args.base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": "Bearer " + bearer, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def rest_session(pair, method, path, body=None):
    request = urllib.request.Request(args.base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Cookie": "cmk_session=" + pair[0], "X-CSRF-Token": pair[1],
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as answer:
        return json.loads(answer.read())


def node_call(tenant, operation, body, credential):
    request = urllib.request.Request(f"{args.node}/v1/tenants/{tenant}/{operation}", method="POST", data=json.dumps(body).encode(),
                                     headers={"Authorization": "Bearer " + credential, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


# --- Health and reflection: the standard services, as their own clients see them -------------
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

health = health_pb2_grpc.HealthStub(channel)
expect(health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING, "health")
expect(health.Check(health_pb2.HealthCheckRequest(service="openkcm.cmk.v1.L1LinkService")).status
       == health_pb2.HealthCheckResponse.SERVING, "health of a service")
try:
    health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    fail("an unknown service is healthy")
except grpc.RpcError as error:
    expect(error.code() == grpc.StatusCode.NOT_FOUND, f"unknown service: {error.code()}")
watched = []
try:
    for answer in health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=1.5):
        watched.append(answer.status)
    fail("the health watch ended by itself")
except grpc.RpcError as error:
    expect(error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"the health watch ends at its deadline: {error.code()}")
expect(watched == [health_pb2.HealthCheckResponse.SERVING], f"the health watch sends the status once: {watched}")
step("health: SERVING")

from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase  # noqa: E402
from google.protobuf.descriptor_pool import DescriptorPool  # noqa: E402

database = ProtoReflectionDescriptorDatabase(channel)
services = set(database.get_services())
expect({"openkcm.cmk.v1.TenantService", "openkcm.cmk.v1.L1LinkService", "openkcm.cmk.v1.AuditService",
        "grpc.health.v1.Health"} <= services, f"reflection lists {services}")
reflected = DescriptorPool(database).FindServiceByName("openkcm.cmk.v1.L1LinkService")
expect("WatchRevocation" in [m.name for m in reflected.methods], "reflection describes L1LinkService")
step(f"reflection: {len(services)} services, L1LinkService with {len(reflected.methods)} methods")

# --- Who may call: the same credentials and access policy as REST -----------------------------
refused(lambda: tenants.ListTenants(T.ListTenantsRequest()), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", "no credential")
refused(lambda: tenants.ListTenants(T.ListTenantsRequest(), metadata=token("okat_not-a-token")), grpc.StatusCode.UNAUTHENTICATED,
        "SESSION_EXPIRED", "a made-up token")
refused(lambda: tenants.CreateTenant(T.CreateTenantRequest(tenant_id="x", tenant=T.Tenant(display_name="x")), metadata=token(AUDITOR)),
        grpc.StatusCode.PERMISSION_DENIED, "FORBIDDEN", "an auditor creating a tenant")
step("auth: no credential UNAUTHENTICATED, auditor PERMISSION_DENIED")

# --- Tenants, with idempotent retries --------------------------------------------------------
create = T.CreateTenantRequest(tenant_id="grpc-acme", tenant=T.Tenant(display_name="ACME over gRPC"), request_id="5c3c0d7e-0001")
first = tenants.CreateTenant(create, metadata=token(ADMIN))
again = tenants.CreateTenant(create, metadata=token(ADMIN))
expect(first.name == "tenants/grpc-acme" and first == again, f"a retried create answers the same: {first} / {again}")
create.tenant.display_name = "something else"
refused(lambda: tenants.CreateTenant(create, metadata=token(ADMIN)), grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")
create.request_id = ""
refused(lambda: tenants.CreateTenant(create, metadata=token(ADMIN)), grpc.StatusCode.FAILED_PRECONDITION, "CONFLICT", "the tenant again")
updated = tenants.UpdateTenant(T.UpdateTenantRequest(tenant=T.Tenant(name="tenants/grpc-acme", etag=first.etag,
                                                                     allowed_regions=T.Regions(regions=["eu-central-1"]))),
                               metadata=token(ADMIN))
expect(list(updated.allowed_regions.regions) == ["eu-central-1"] and updated.etag != first.etag, f"update: {updated}")
refused(lambda: tenants.UpdateTenant(T.UpdateTenantRequest(tenant=T.Tenant(name="tenants/grpc-acme", etag=first.etag)),
                                     metadata=token(ADMIN)), grpc.StatusCode.ABORTED, "PRECONDITION_FAILED", "a stale etag")
refused(lambda: tenants.GetTenant(T.GetTenantRequest(name="tenant/grpc-acme"), metadata=token(ADMIN)),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT", "a malformed name")
refused(lambda: tenants.GetTenant(T.GetTenantRequest(name="tenants/nobody"), metadata=token(ADMIN)),
        grpc.StatusCode.NOT_FOUND, "NOT_FOUND", "an unknown tenant")
refused(lambda: tenants.ListTenants(T.ListTenantsRequest(page_size=9999), metadata=token(ADMIN)),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT", "a page too large")
code, body = rest("GET", "/api/v1/tenants/grpc-acme")
expect(code == 200 and json.loads(body)["allowedRegions"] == ["eu-central-1"] and str(json.loads(body)["version"]) == updated.etag,
       f"REST sees the tenant gRPC changed: {code} {body}")
step("tenants: created, retried, updated; REST sees the same tenant")

# --- Keystores and the handshake ---------------------------------------------------------------
listed = keystores.ListKeystores(K.ListKeystoresRequest(), metadata=token(ADMIN)).keystores
expect([k.name for k in listed][:1] == ["keystores/hsm"] and listed[0].status.state == K.TokenStatus.AVAILABLE, f"keystores: {listed}")
keys = keystores.ListKeys(K.ListKeysRequest(parent="keystores/hsm"), metadata=token(ADMIN)).keys
expect(any(k.label == "l1" and k.usable_as_l1 for k in keys), f"keys: {keys}")
refused(lambda: keystores.GetKeystore(K.GetKeystoreRequest(name="keystores/nowhere"), metadata=token(ADMIN)),
        grpc.StatusCode.NOT_FOUND, "NOT_FOUND", "an unknown keystore")

report = links.ValidateL1Link(L.ValidateL1LinkRequest(parent="tenants/grpc-acme", provider="pkcs11", keystore="keystores/hsm",
                                                      key="pkcs11:object=missing"), metadata=token(ADMIN))
expect(not report.passed and report.failure.code == "not_found", f"validate a missing key: {report}")
error, probes = refused(lambda: links.CreateL1Link(L.CreateL1LinkRequest(parent="tenants/grpc-acme", provider="pkcs11", keystore="hsm",
                                                                         key="pkcs11:object=missing"), metadata=token(ADMIN)),
                        grpc.StatusCode.FAILED_PRECONDITION, "PROBE_FAILED", "a handshake with a missing key")
expect(len(probes) == 1 and [c.name for c in probes[0].checks if not c.passed] == ["key_found"], f"the probe report in details: {probes}")
refused(lambda: links.CreateL1Link(L.CreateL1LinkRequest(parent="tenants/grpc-acme", provider="pkcs11", keystore="hsm",
                                                         key="not a uri"), metadata=token(ADMIN)),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT", "a malformed PKCS#11 URI")
link = links.CreateL1Link(L.CreateL1LinkRequest(parent="tenants/grpc-acme", provider="pkcs11", keystore="hsm", key="pkcs11:object=l1",
                                                request_id="5c3c0d7e-0002"), metadata=token(ADMIN))
expect(link.state == L.L1Link.LINKED and link.l2.state == L.L2Key.ACTIVE and link.name.startswith("tenants/grpc-acme/l1Links/"),
       f"handshake: {link}")
probed = links.ProbeL1Link(L.ProbeL1LinkRequest(name=link.name), metadata=token(ADMIN))
expect(probed.last_probe.passed, f"re-probe: {probed}")
step(f"linked over gRPC: {link.name}, L2Ref {link.l2.ref}")

# --- Unseal through the node, with an application's credential -------------------------------
issued = rest_session(ADMIN_SESSION, "POST", "/api/v1/app-credentials", {"name": "grpc-journey", "tenants": ["grpc-acme"]})
credential = issued["credential"]
deadline = time.time() + 20
while True:
    code, sealed = node_call("grpc-acme", "encrypt", {"plaintext": base64.b64encode(b"before the revocation").decode()}, credential)
    if code == 200 or time.time() > deadline:
        break
    time.sleep(0.3)
expect(code == 200 and "ciphertext" in json.dumps(sealed), f"the node encrypts (it unsealed L2): {code} {sealed}")
step("node unsealed L2 and encrypts")

listed = nodes.ListNodes(N.ListNodesRequest(), metadata=token(OPERATOR)).nodes
expect(len(listed) == 1 and listed[0].connected, f"nodes: {listed}")
enrolment = nodes.CreateEnrolment(N.CreateEnrolmentRequest(region="eu-central-1"), metadata=token(OPERATOR))
expect(enrolment.token and enrolment.name.startswith("enrolments/"), f"enrolment: {enrolment}")
refused(lambda: nodes.CreateEnrolment(N.CreateEnrolmentRequest(region="eu-central-1"), metadata=token(ADMIN)),
        grpc.StatusCode.PERMISSION_DENIED, "FORBIDDEN", "a security admin enrolling a node")
step("nodes: one connected; an enrolment token issued by the platform operator")

# --- The kill-switch, with its progress streamed to LOCKED ------------------------------------
refused(lambda: links.RevokeL1Link(L.RevokeL1LinkRequest(name=link.name), metadata=token(ADMIN)),
        grpc.StatusCode.PERMISSION_DENIED, "STEP_UP_REQUIRED", "a token at the kill-switch")
revoked = links.RevokeL1Link(L.RevokeL1LinkRequest(name=link.name, etag=probed.etag, request_id="5c3c0d7e-0003"),
                             metadata=session(ADMIN_SESSION))
expect(revoked.l1_link.state == L.L1Link.REVOKED and revoked.event.type == "l1.revoked", f"revoke: {revoked}")
messages = list(links.WatchRevocation(L.GetRevocationRequest(name=link.name + "/revocation"), metadata=token(ADMIN), timeout=30))
final = messages[-1]
expect(final.state == L.Revocation.LOCKED and not final.missing and all(n.acknowledged for n in final.nodes),
       f"the stream ends at LOCKED: {messages}")
expect(all(m.state == L.Revocation.REVOKED for m in messages[:-1]), "only the last message is LOCKED")
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: E402

for progress in final.nodes:
    Ed25519PublicKey.from_public_bytes(progress.signing_key).verify(progress.signature, progress.statement.encode())
    statement = json.loads(progress.statement)
    expect(statement.get("event") == revoked.event.id, f"the acknowledgement names the event: {statement}")
step(f"locked: LOCKED after {len(messages)} message(s); {len(final.nodes)} signed acknowledgement(s) verified")
code, body = rest("GET", "/api/v1/tenants/grpc-acme/l1-links/" + link.name.split("/")[-1] + "/revocation")
expect(code == 200 and json.loads(body)["state"] == "LOCKED", f"REST sees LOCKED: {code} {body}")
code, _ = node_call("grpc-acme", "encrypt", {"plaintext": "eA=="}, credential)
expect(code != 200, "the node no longer encrypts for the tenant")
step("REST sees the same revocation; the node dropped the key")

# --- Lifting it with L1 and a second person ---------------------------------------------------
refused(lambda: links.RestoreL1Link(L.RestoreL1LinkRequest(name=link.name), metadata=session(ADMIN_SESSION)),
        grpc.StatusCode.PERMISSION_DENIED, "APPROVAL_REQUIRED", "a restore without approval")
request = approvals.CreateApproval(A.CreateApprovalRequest(operation="link.restore", tenant="tenants/grpc-acme", link=link.name,
                                                           reason="drill over"), metadata=session(ADMIN_SESSION))
expect(request.state == A.Approval.PENDING and request.required_people == 2, f"approval request: {request}")
refused(lambda: approvals.ApproveApproval(A.ApproveApprovalRequest(name=request.name), metadata=session(ADMIN_SESSION)),
        grpc.StatusCode.PERMISSION_DENIED, "SELF_APPROVAL", "the requester approving")
approved = approvals.ApproveApproval(A.ApproveApprovalRequest(name=request.name), metadata=session(BOB_SESSION))
expect(approved.state == A.Approval.APPROVED, f"bob approved: {approved}")
restored = links.RestoreL1Link(L.RestoreL1LinkRequest(name=link.name, approval=request.name), metadata=session(ADMIN_SESSION))
expect(restored.l1_link.state == L.L1Link.LINKED and restored.l1_link.epoch == 2, f"restore: {restored}")
step("restored: LINKED, epoch 2, approved by bob")

# --- A revocation a node cannot acknowledge: the stream stops at the caller's deadline --------
deadline = time.time() + 20
while node_call("grpc-acme", "encrypt", {"plaintext": "eA=="}, credential)[0] != 200 and time.time() < deadline:
    time.sleep(0.3)
os.kill(args.node_pid, signal.SIGKILL)
again = links.RevokeL1Link(L.RevokeL1LinkRequest(name=link.name), metadata=session(ADMIN_SESSION))
seen = []
started = time.time()
try:
    for message in links.WatchRevocation(L.GetRevocationRequest(name=link.name), metadata=token(ADMIN), timeout=3):
        seen.append(message)
    fail("the stream ended before LOCKED without the deadline")
except grpc.RpcError as error:
    expect(error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline: {error.code()}")
expect(seen and seen[0].state == L.Revocation.REVOKED and list(seen[0].missing) == [listed[0].name] and seen[0].HasField("exposure_bound_time"),
       f"progress names the missing node: {seen}")
expect(time.time() - started < 10, "the deadline was honoured")
step(f"deadline: DEADLINE_EXCEEDED after {time.time() - started:.1f} s, the stopped node still missing")

# --- Bad input keeps the service running --------------------------------------------------------
refused(lambda: links.GetL1Link(L.GetL1LinkRequest(name="tenants/grpc-acme/l1Links/nope"), metadata=token(ADMIN)),
        grpc.StatusCode.NOT_FOUND, "NOT_FOUND", "an unknown link")
refused(lambda: tenants.CreateTenant(T.CreateTenantRequest(tenant_id="big", tenant=T.Tenant(display_name="x" * 200_000)),
                                     metadata=token(ADMIN)), grpc.StatusCode.RESOURCE_EXHAUSTED, "BODY_TOO_LARGE", "a 200 kB request")
try:
    tenants.CreateTenant(T.CreateTenantRequest(tenant_id="huge", tenant=T.Tenant(display_name="x" * 5_000_000)), metadata=token(ADMIN))
    fail("a 5 MB request was accepted")
except grpc.RpcError as error:
    expect(error.code() not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN), f"a 5 MB request: {error.code()}")
code, body = rest("GET", "/api/v1/tenants/big")
expect(code == 404, "an oversized request changed nothing")
expect(health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING, "still serving")
step("bad input: NOT_FOUND, RESOURCE_EXHAUSTED (body_too_large), a 5 MB message refused unread; still SERVING")

# --- The audit log: listed, proved, exported as a stream, verified offline ----------------------
records = audit.ListAuditRecords(AU.ListAuditRecordsRequest(operation="link.revoke"), metadata=token(AUDITOR)).audit_records
expect(len(records) == 2 and all(json.loads(r.canonical_json)["actor"]["id"] == "admin" for r in records), f"revocations: {records}")
grpc_uses = audit.ListAuditRecords(AU.ListAuditRecordsRequest(operation="auth.token_use", page_size=1000),
                                   metadata=token(AUDITOR)).audit_records
expect(any(json.loads(r.canonical_json).get("target") == "gRPC openkcm.cmk.v1.L1LinkService/CreateL1Link" for r in grpc_uses),
       "token uses over gRPC are on the record")
proof = audit.GetAuditRecord(AU.GetAuditRecordRequest(name=records[0].name), metadata=token(AUDITOR))
leaf = hashlib.sha256(b"\x00" + proof.record.canonical_json.encode()).digest()
expect(proof.leaf_hash == leaf and proof.tree_size > records[0].seq and proof.checkpoint, "inclusion proof")
checkpoint = audit.GetCheckpoint(AU.GetCheckpointRequest(), metadata=token(AUDITOR))
consistency = audit.GetConsistencyProof(AU.GetConsistencyProofRequest(from_size=1, to_size=checkpoint.tree_size), metadata=token(AUDITOR))
expect(consistency.to_size == checkpoint.tree_size, "consistency proof")
chunks = list(audit.ExportAuditLog(AU.ExportAuditLogRequest(), metadata=token(AUDITOR), timeout=60))
export = b"".join(c.data for c in chunks)
path = os.path.join(out, "audit.jsonl")
with open(path, "wb") as handle:
    handle.write(export)
key = os.path.join(out, "audit-key.pem")
with open(key, "w") as handle:
    handle.write(checkpoint.public_key_pem)
verified = subprocess.run([args.cmk, "audit", "verify", path, "--public-key", key], capture_output=True, text=True)
expect(verified.returncode == 0, f"cmk audit verify: {verified.stdout} {verified.stderr}")
size = checkpoint.tree_size
code, body = rest("GET", f"/api/v1/audit/export?from=0&to={size}", bearer=AUDITOR)
grpc_again = b"".join(c.data for c in audit.ExportAuditLog(AU.ExportAuditLogRequest(to_seq=size), metadata=token(AUDITOR)))
expect(code == 200 and body == grpc_again, "the gRPC and REST exports of the same records are the same bytes")
refused(lambda: audit.GetCheckpoint(AU.GetCheckpointRequest(), metadata=token(OPERATOR)),
        grpc.StatusCode.PERMISSION_DENIED, "FORBIDDEN", "a platform operator reading the audit log")
step(f"audit export: {len(chunks)} chunk(s), {len(export)} bytes, verified by cmk audit verify")
step("grpc journey: passed")
