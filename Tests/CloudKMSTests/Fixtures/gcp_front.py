"""A front for drongo (the Cloud KMS emulator), for the GCP driver's tests.

drongo has the key rings, keys and the :encrypt/:decrypt semantics (AAD checked) but no
authentication and it accepts any CRC32C a request claims. This front adds, as Google does:
- an OAuth2 token endpoint (POST /token) that verifies the RFC 7523 JWT grant's RS256 signature
  with the service account's public key and its iss/aud/scope/exp claims;
- bearer-token checks on every /v1 request (401 UNAUTHENTICATED otherwise);
- CRC32C checks of the request's integrity fields (400 INVALID_ARGUMENT on a mismatch);
- pages of key rings and CryptoKeys (`pageSize` 1-1000, default 1000; `pageToken`,
  `nextPageToken`; an unknown token is 400 INVALID_ARGUMENT), which drongo answers whole, and
  the project's locations (`GET /v1/projects/P/locations`: the one location it uses), which
  drongo does not serve.
For the tests it can also, on demand (POST /_control): corrupt the next answers' ciphertext or
plaintext (keeping their checksums), refuse :decrypt with 403 PERMISSION_DENIED, refuse
listing (403), throttle, or make `makeKeys` CryptoKeys in key ring `bulk` (k00, k01, …).
It does not model IAM roles, key versions' states, rotation, or TLS.

Usage: gcp_front.py PORT DRONGO_URL OUT_JSON — writes the service account key file next to
OUT_JSON and prints nothing; OUT_JSON gets the names the tests use."""
import base64, json, os, secrets, sys, time, urllib.error, urllib.parse, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import google_crc32c
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

port, drongo, out = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3]
base = f"http://127.0.0.1:{port}"
project, location, ring = "openkcm-test", "europe-west3", "cmk"
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
email = "cmk-gateway@openkcm-test.iam.gserviceaccount.com"
account = {"type": "service_account", "project_id": project, "private_key_id": secrets.token_hex(20),
           "private_key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode(),
           "client_email": email, "token_uri": base + "/token"}
account_file = os.path.join(os.path.dirname(out), "gcp-service-account.json")
with open(account_file, "w") as f:
    json.dump(account, f)
os.chmod(account_file, 0o600)
tokens = set()
control = {"corrupt": 0, "denyDecrypt": False, "denyList": False, "throttle": 0}


def drongo_call(method, path, body=None):
    request = urllib.request.Request(drongo + path, json.dumps(body).encode() if body is not None else None,
                                     {"Content-Type": "application/json"}, method=method)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


parent = f"/v1/projects/{project}/locations/{location}"
drongo_call("POST", f"{parent}/keyRings?keyRingId={ring}", {})
drongo_call("POST", f"{parent}/keyRings/{ring}/cryptoKeys?cryptoKeyId=l1", {"purpose": "ENCRYPT_DECRYPT"})
drongo_call("POST", f"{parent}/keyRings/{ring}/cryptoKeys?cryptoKeyId=signing",
            {"purpose": "ASYMMETRIC_SIGN", "versionTemplate": {"algorithm": "RSA_SIGN_PSS_2048_SHA256"}})


def b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def crc(data):
    return str(google_crc32c.value(data))


class Front(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def google_error(self, status, code, message):
        self.answer(status, {"error": {"code": status, "message": message, "status": code}})

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):
        if self.path == "/token":
            return self.token()
        if self.path == "/_control":
            request = json.loads(self.body())
            count = request.pop("makeKeys", 0)
            if count:
                drongo_call("POST", f"{parent}/keyRings?keyRingId=bulk", {})
                for index in range(count):
                    drongo_call("POST", f"{parent}/keyRings/bulk/cryptoKeys?cryptoKeyId=k{index:02d}", {"purpose": "ENCRYPT_DECRYPT"})
            control.update(request)
            return self.answer(200, control)
        self.forward("POST")

    def do_GET(self):
        self.forward("GET")

    def token(self):
        form = dict(pair.split("=", 1) for pair in self.body().decode().split("&"))
        if form.get("grant_type") != "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer":
            return self.answer(400, {"error": "unsupported_grant_type"})
        try:
            header64, claims64, signature64 = form["assertion"].split(".")
            key.public_key().verify(b64url(signature64), f"{header64}.{claims64}".encode(), padding.PKCS1v15(), hashes.SHA256())
            header, claims = json.loads(b64url(header64)), json.loads(b64url(claims64))
        except Exception:
            return self.answer(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        now = time.time()
        if header.get("alg") != "RS256" or claims.get("iss") != email or claims.get("aud") != account["token_uri"] \
                or "cloudkms" not in claims.get("scope", "") or not (claims.get("iat", 0) - 60 <= now < claims.get("exp", 0)):
            return self.answer(400, {"error": "invalid_grant", "error_description": "Invalid JWT claims."})
        token = "ya29." + secrets.token_urlsafe(32)
        tokens.add(token)
        self.answer(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def forward(self, method):
        if self.headers.get("Authorization", "").removeprefix("Bearer ") not in tokens:
            return self.google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if control["throttle"] > 0:
            control["throttle"] -= 1
            return self.google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.")
        url = urllib.parse.urlparse(self.path)
        if method == "GET" and (url.path.endswith("/keyRings") or url.path.endswith("/cryptoKeys") or url.path.endswith("/locations")):
            return self.list_page(url)
        raw = self.body() if method == "POST" else None
        body = json.loads(raw) if raw else None
        if body is not None:
            for field in ("plaintext", "ciphertext", "additionalAuthenticatedData"):
                if field in body and field + "Crc32c" in body and crc(base64.b64decode(body[field])) != body[field + "Crc32c"]:
                    return self.google_error(400, "INVALID_ARGUMENT",
                                             f"The checksum in field {field}_crc32c did not match the data in field {field}.")
        if self.path.endswith(":decrypt") and control["denyDecrypt"]:
            return self.google_error(403, "PERMISSION_DENIED", "Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied.")
        status, answer = drongo_call(method, self.path, body)
        if status == 200 and control["corrupt"] > 0 and (self.path.endswith(":encrypt") or self.path.endswith(":decrypt")):
            control["corrupt"] -= 1
            parsed = json.loads(answer)
            field = "ciphertext" if "ciphertext" in parsed else "plaintext"
            data = bytearray(base64.b64decode(parsed[field]))
            data[len(data) // 2] ^= 1
            parsed[field] = base64.b64encode(bytes(data)).decode()
            answer = json.dumps(parsed).encode()
        self.answer(status, answer)

    def list_page(self, url):
        if control["denyList"]:
            return self.google_error(403, "PERMISSION_DENIED", "Permission 'cloudkms.cryptoKeys.list' denied.")
        query = dict(urllib.parse.parse_qsl(url.query))
        size, token = int(query.get("pageSize", "1000")), query.get("pageToken")
        if not 1 <= size <= 1000 or (token is not None and not token.isdigit()):
            return self.google_error(400, "INVALID_ARGUMENT", "Invalid page size or page token.")
        if url.path.endswith("/locations"):
            if url.path != f"/v1/projects/{project}/locations":
                return self.google_error(404, "NOT_FOUND", "Project not found.")
            field, items = "locations", [{"name": f"projects/{project}/locations/{location}", "locationId": location}]
        else:
            status, answer = drongo_call("GET", url.path)
            if status != 200:
                return self.answer(status, answer)
            field = "keyRings" if url.path.endswith("/keyRings") else "cryptoKeys"
            items = json.loads(answer).get(field, [])
        start = int(token or 0)
        page = {field: items[start:start + size]}
        if start + size < len(items):
            page["nextPageToken"] = str(start + size)
        self.answer(200, page)


with open(out, "w") as f:
    json.dump({"serviceAccountKeyFile": account_file, "tokenEndpoint": base + "/token", "project": project,
               "key": f"projects/{project}/locations/{location}/keyRings/{ring}/cryptoKeys/l1",
               "signingKey": f"projects/{project}/locations/{location}/keyRings/{ring}/cryptoKeys/signing",
               "missingKey": f"projects/{project}/locations/{location}/keyRings/{ring}/cryptoKeys/nope"}, f)
# A listing describes keys eight at a time, each on a new connection: the default backlog (5)
# would drop connections, and a dropped SYN is retried only after a second.
ThreadingHTTPServer.request_queue_size = 64
ThreadingHTTPServer(("127.0.0.1", port), Front).serve_forever()
