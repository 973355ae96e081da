"""A small fake of Azure Key Vault's REST API (and of Entra ID's token endpoint), for the
Azure driver's tests; no Key Vault emulator exists.

What it checks, as Key Vault does:
- OAuth2 client credentials at POST /{tenant}/oauth2/v2.0/token (client id, secret, scope
  https://vault.azure.net/.default); 401 invalid_client otherwise;
- a bearer token from it on every /keys request (401 otherwise), and `api-version` present (400);
- GET /keys/{name}[/{version}] (a key bundle: kid, kty, key_ops, attributes.enabled, and for
  `expiring-l1` attributes.nbf and exp, fixed dates around the tests' manual clock);
- POST /keys/{name}/{version}/wrapkey and /unwrapkey: the algorithm must suit the key
  (RSA-OAEP-256 for RSA keys, A256KW for oct-HSM keys), the key must be enabled (403) and
  permit wrapKey/unwrapKey (403); the cryptography is real (RSA-OAEP-256 with SHA-256,
  RFC 3394 AES key wrap); a blob that does not unwrap is 400 BadParameter;
- GET /keys: the keys' items (kid without a version, attributes), `maxresults` 1-25 (25 by
  default, as Key Vault), `nextLink` with a `$skiptoken` while more remain;
- unknown keys or versions: 404 KeyNotFound; errors in Key Vault's JSON shape.
On demand (POST /_control): throttle the next N requests (429, Retry-After: 0); refuse
listing (403 Forbidden); answer a nextLink on another host (as a hostile or broken server
might); make `makeKeys` more RSA keys `bulk-00`, `bulk-01`, … (every third one disabled).
What it does not model: RBAC roles and access policies beyond the one application, soft-delete
and recovery, rotation policies, key release, HSM attestation, request ids, TLS.

Usage: azure_keyvault_fake.py PORT OUT_JSON — writes the client secret next to OUT_JSON and
the names the tests use into OUT_JSON."""
import base64, json, os, secrets, sys, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

port, out = int(sys.argv[1]), sys.argv[2]
base = f"http://127.0.0.1:{port}"
tenant, client_id, client_secret = "8f1c2d9e-0a3b-4c5d-8e7f-001122334455", "3b7e9f1a-2c4d-4e6f-8a0b-c1d2e3f40516", secrets.token_urlsafe(24)
secret_file = os.path.join(os.path.dirname(out), "azure-client-secret")
with open(secret_file, "w") as f:
    f.write(client_secret + "\n")
os.chmod(secret_file, 0o600)
tokens = set()
control = {"throttle": 0, "denyList": False, "foreignNextLink": False}


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def version():
    return secrets.token_hex(16)


def rsa_key(ops, enabled=True):
    return {"kty": "RSA", "ops": ops, "enabled": enabled, "versions": {version(): rsa.generate_private_key(public_exponent=65537, key_size=2048)}}


keys = {
    "customer-l1": rsa_key(["wrapKey", "unwrapKey", "encrypt", "decrypt"]),
    "disabled-l1": rsa_key(["wrapKey", "unwrapKey"], enabled=False),
    "sign-only": rsa_key(["sign", "verify"]),
    "hsm-l1": {"kty": "oct-HSM", "ops": ["wrapKey", "unwrapKey"], "enabled": True, "versions": {version(): os.urandom(32)}},
    # Valid from an hour before to two hours after 1,800,000,000 (ManualClock's default start).
    "expiring-l1": dict(rsa_key(["wrapKey", "unwrapKey"]), nbf=1_799_996_400, exp=1_800_007_200),
}
# A second version of the customer's key: blobs wrapped under the first must still unwrap.
keys["customer-l1"]["first"] = next(iter(keys["customer-l1"]["versions"]))


class Vault(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, code, message, inner=None, headers=()):
        body = {"error": {"code": code, "message": message}}
        if inner:
            body["error"]["innererror"] = {"code": inner}
        self.answer(status, body, headers)

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):
        url = urllib.parse.urlparse(self.path)
        if url.path == f"/{tenant}/oauth2/v2.0/token":
            form = dict(urllib.parse.parse_qsl(self.body().decode()))
            if form.get("grant_type") != "client_credentials" or form.get("client_id") != client_id:
                return self.answer(400, {"error": "unauthorized_client", "error_description": "AADSTS700016: Application not found."})
            if form.get("client_secret") != client_secret:
                return self.answer(401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})
            if form.get("scope") not in ("https://vault.azure.net/.default", "https://managedhsm.azure.net/.default"):
                return self.answer(400, {"error": "invalid_scope"})
            token = secrets.token_urlsafe(32)
            tokens.add(token)
            return self.answer(200, {"token_type": "Bearer", "expires_in": 3599, "access_token": token})
        if url.path == "/_control":
            request = json.loads(self.body())
            for index in range(request.pop("makeKeys", 0)):
                # Material made when first used: a listing reads only the bundle.
                keys.setdefault(f"bulk-{index:02d}", {"kty": "RSA", "ops": ["wrapKey", "unwrapKey"], "enabled": index % 3 != 2,
                                                     "versions": {version(): None}})
            control.update(request)
            return self.answer(200, control)
        self.keys_request("POST", url)

    def do_GET(self):
        self.keys_request("GET", urllib.parse.urlparse(self.path))

    def keys_request(self, method, url):
        if self.headers.get("Authorization", "").removeprefix("Bearer ") not in tokens:
            return self.error(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.",
                              headers=[("WWW-Authenticate", f'Bearer authorization="https://login.microsoftonline.com/{tenant}", resource="https://vault.azure.net"')])
        if "api-version" not in urllib.parse.parse_qs(url.query):
            return self.error(400, "BadParameter", "The 'api-version' query parameter is missing.")
        if control["throttle"] > 0:
            control["throttle"] -= 1
            return self.error(429, "Throttled", "Request was not processed because too many requests were received.", headers=[("Retry-After", "0")])
        parts = url.path.strip("/").split("/")
        if method == "GET" and parts == ["keys"]:
            return self.list_keys(urllib.parse.parse_qs(url.query))
        if len(parts) < 2 or parts[0] != "keys" or parts[1] not in keys:
            return self.error(404, "KeyNotFound", f"A key with (name/id) {parts[1] if len(parts) > 1 else '?'} was not found in this key vault.")
        entry = keys[parts[1]]
        ver = parts[2] if len(parts) > 2 else list(entry["versions"])[-1]
        if ver not in entry["versions"]:
            return self.error(404, "KeyNotFound", f"A key with (name/id) {parts[1]}/{ver} was not found in this key vault.")
        kid = f"{base}/keys/{parts[1]}/{ver}"
        if method == "GET" and len(parts) <= 3:
            attributes = {"enabled": entry["enabled"], "created": 1764403200, "updated": 1764403200, "recoveryLevel": "Recoverable+Purgeable"}
            attributes.update({name: entry[name] for name in ("nbf", "exp") if name in entry})
            return self.answer(200, {"key": {"kid": kid, "kty": entry["kty"], "key_ops": entry["ops"]}, "attributes": attributes})
        if method != "POST" or len(parts) != 4 or parts[3] not in ("wrapkey", "unwrapkey"):
            return self.error(400, "BadParameter", "Unsupported operation.")
        operation = "wrapKey" if parts[3] == "wrapkey" else "unwrapKey"
        if not entry["enabled"]:
            return self.error(403, "Forbidden", f"Operation {operation} is not allowed on a disabled key.", inner="KeyDisabled")
        if operation not in entry["ops"]:
            return self.error(403, "Forbidden", f"Operation {operation} is not permitted on this key.", inner="KeyOperationForbidden")
        request = json.loads(self.body())
        if entry["versions"][ver] is None:
            entry["versions"][ver] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        material = entry["versions"][ver]
        value = unb64u(request.get("value", ""))
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        if entry["kty"] == "RSA" and request.get("alg") == "RSA-OAEP-256":
            try:
                result = material.public_key().encrypt(value, oaep) if operation == "wrapKey" else material.decrypt(value, oaep)
            except ValueError:
                return self.error(400, "BadParameter", "Error occurred while decrypting the ciphertext.")
        elif entry["kty"] == "oct-HSM" and request.get("alg") == "A256KW":
            try:
                result = aes_key_wrap(material, value) if operation == "wrapKey" else aes_key_unwrap(material, value)
            except (InvalidUnwrap, ValueError):
                return self.error(400, "BadParameter", "Error occurred while unwrapping the key.")
        else:
            return self.error(400, "BadParameter", f"Algorithm {request.get('alg')} is not supported for key type {entry['kty']}.")
        self.answer(200, {"kid": kid, "value": b64u(result)})

    def list_keys(self, query):
        if control["denyList"]:
            return self.error(403, "Forbidden", "The user, group or application does not have keys list permission on key vault.",
                              inner="ForbiddenByPolicy")
        size, skip = query.get("maxresults", ["25"])[0], query.get("$skiptoken", ["0"])[0]
        if not size.isdigit() or not 1 <= int(size) <= 25 or not skip.isdigit():
            return self.error(400, "BadParameter", "Invalid maxresults or skip token.")
        size, skip = int(size), int(skip)
        names = sorted(keys)
        items = [{"kid": f"{base}/keys/{name}", "attributes": {"enabled": keys[name]["enabled"], "created": 1764403200,
                                                              "updated": 1764403200, "recoveryLevel": "Recoverable+Purgeable"}}
                 for name in names[skip:skip + size]]
        body = {"value": items, "nextLink": None}
        if skip + size < len(names):
            host = "https://evil.example.com" if control["foreignNextLink"] else base
            body["nextLink"] = f"{host}/keys?api-version=7.4&$skiptoken={skip + size}&maxresults={size}"
        self.answer(200, body)


with open(out, "w") as f:
    json.dump({"vault": base, "tenantID": tenant, "clientID": client_id, "clientSecretFile": secret_file, "authority": base,
               "key": f"{base}/keys/customer-l1", "firstVersion": keys["customer-l1"]["first"],
               "disabledKey": f"{base}/keys/disabled-l1", "signOnlyKey": f"{base}/keys/sign-only", "hsmKey": f"{base}/keys/hsm-l1",
               "expiringKey": f"{base}/keys/expiring-l1", "missingKey": f"{base}/keys/nope"}, f)
# A listing describes keys eight at a time, each on a new connection: the default backlog (5)
# would drop connections, and a dropped SYN is retried only after a second.
ThreadingHTTPServer.request_queue_size = 64
ThreadingHTTPServer(("127.0.0.1", port), Vault).serve_forever()
