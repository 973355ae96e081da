"""A front for moto's KMS that pages ListKeys and ListAliases as AWS does, for the AWS driver's
listing tests: moto 5 answers every key in one page and ignores `Limit` and `Marker`.

Every request is forwarded to moto unchanged (method, path, headers including Host, body), so
moto still checks the SigV4 signature and the IAM policy. The answers of ListKeys and
ListAliases (200 only) are then cut to the request's `Limit` (1-1000, default 100) from its
`Marker`, with `Truncated` and `NextMarker` as AWS sets them; a `Marker` this front did not hand
out is 400 InvalidMarkerException. Other answers pass through untouched.

Usage: moto_pager.py PORT MOTO_URL"""
import http.client, json, sys, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, moto = int(sys.argv[1]), urllib.parse.urlparse(sys.argv[2])
LISTS = {"TrentService.ListKeys": "Keys", "TrentService.ListAliases": "Aliases"}


class Pager(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        connection = http.client.HTTPConnection(moto.hostname, moto.port, timeout=30)
        connection.putrequest("POST", self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() not in ("content-length", "connection"):
                connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        status, answer, content_type = response.status, response.read(), response.getheader("Content-Type", "application/json")
        connection.close()
        field = LISTS.get(self.headers.get("X-Amz-Target", ""))
        if field and status == 200:
            request = json.loads(body or b"{}")
            limit = int(request.get("Limit", 100))
            marker = request.get("Marker")
            if not 1 <= limit <= 1000:
                return self.send(400, json.dumps({"__type": "ValidationException", "message": "Limit must be 1-1000"}).encode(), content_type)
            if marker is not None and not (marker.startswith("page-") and marker[5:].isdigit()):
                return self.send(400, json.dumps({"__type": "InvalidMarkerException", "message": "The marker is not valid"}).encode(), content_type)
            start = int(marker[5:]) if marker else 0
            parsed = json.loads(answer)
            items = parsed.get(field, [])
            parsed[field] = items[start:start + limit]
            parsed["Truncated"] = start + limit < len(items)
            parsed.pop("NextMarker", None)
            if parsed["Truncated"]:
                parsed["NextMarker"] = f"page-{start + limit}"
            answer = json.dumps(parsed).encode()
        self.send(status, answer, content_type)

    def send(self, status, data, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


# A listing describes keys eight at a time, each on a new connection: the default backlog (5)
# would drop connections, and a dropped SYN is retried only after a second.
ThreadingHTTPServer.request_queue_size = 64
ThreadingHTTPServer(("127.0.0.1", port), Pager).serve_forever()
