// Audit log verification in the browser (Docs/AuditFormat.md): RFC 8785 canonical records,
// the hash chain, the RFC 9162 Merkle tree and inclusion proofs, and C2SP signed-note
// checkpoints (Ed25519, WebCrypto). Written apart from the server's verifier on purpose: the
// portal checks what the server says instead of trusting it. No dependencies.
"use strict";

const AuditVerify = (() => {
  const utf8 = new TextEncoder();

  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const fromHex = (text) => {
    if (!/^([0-9a-f]{2})*$/.test(text)) throw new Error("not lower-case hex: " + text.slice(0, 16));
    return Uint8Array.from(text.match(/../g) || [], (pair) => parseInt(pair, 16));
  };
  const fromBase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) { out.set(part, at); at += part.length; }
    return out;
  };
  const equal = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
  const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));

  const leafHash = (recordBytes) => sha256(concat(Uint8Array.of(0), recordBytes));
  const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));
  const chainHash = (previous, leaf) => sha256(concat(Uint8Array.of(2), previous, leaf));

  /** RFC 8785: keys sorted by UTF-16 code units, strings as ECMAScript serialises them, integers only here. */
  function jcs(value) {
    if (value === null || typeof value === "boolean") return JSON.stringify(value);
    if (typeof value === "number") {
      if (!Number.isSafeInteger(value)) throw new Error("a number that is not a safe integer");
      return String(value);
    }
    if (typeof value === "string") return JSON.stringify(value);
    if (Array.isArray(value)) return "[" + value.map(jcs).join(",") + "]";
    return "{" + Object.keys(value).sort().map((k) => JSON.stringify(k) + ":" + jcs(value[k])).join(",") + "}";
  }

  /** The compact Merkle range of a growing log: the roots of its perfect subtrees, largest first. */
  class Frontier {
    constructor(size, roots) {
      this.size = size;
      this.nodes = [];
      let remaining = size;
      const rootsCopy = roots.slice();
      for (let bit = 2 ** 52; bit >= 1; bit /= 2) {
        if (remaining >= bit) {
          if (rootsCopy.length === 0) throw new Error("the start frontier is too short for size " + size);
          this.nodes.push({ size: bit, hash: rootsCopy.shift() });
          remaining -= bit;
        }
      }
      if (rootsCopy.length) throw new Error("the start frontier is too long for size " + size);
    }
    async append(leaf) {
      let node = { size: 1, hash: leaf };
      while (this.nodes.length && this.nodes[this.nodes.length - 1].size === node.size) {
        const left = this.nodes.pop();
        node = { size: left.size * 2, hash: await nodeHash(left.hash, node.hash) };
      }
      this.nodes.push(node);
      this.size += 1;
    }
    async root() {
      if (this.nodes.length === 0) return sha256(new Uint8Array(0));
      let hash = this.nodes[this.nodes.length - 1].hash;
      for (let i = this.nodes.length - 2; i >= 0; i--) hash = await nodeHash(this.nodes[i].hash, hash);
      return hash;
    }
  }

  /** A C2SP checkpoint note: body (origin, size, root, time) and its signature lines. */
  function parseNote(note) {
    const split = note.indexOf("\n\n");
    if (split < 0) throw new Error("the checkpoint has no signature block");
    const body = note.slice(0, split + 1);
    const lines = body.split("\n");
    if (lines.length !== 5 || lines[4] !== "" || !/^[0-9]+$/.test(lines[1]) || !lines[3].startsWith("time ")) {
      throw new Error("the checkpoint body is not origin, size, root and time");
    }
    const signatures = note.slice(split + 2).split("\n").filter((l) => l.length).map((line) => {
      const match = /^\u2014 (\S+) ([A-Za-z0-9+/=]+)$/.exec(line);
      if (!match) throw new Error("a malformed signature line");
      const bytes = fromBase64(match[2]);
      return { name: match[1], keyHash: bytes.slice(0, 4), signature: bytes.slice(4) };
    });
    return { body, origin: lines[0], size: Number(lines[1]), root: fromBase64(lines[2]), time: lines[3].slice(5), signatures };
  }

  /** `name+hash+base64(0x01 ‖ Ed25519 key)` → a WebCrypto key and its C2SP key hash. */
  async function importVerifierKey(verifierKey) {
    // name+hash+key: the name has no "+", the hash is 8 hex digits, the base64 key may hold "+".
    const match = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/]+=*)$/.exec(verifierKey || "");
    if (!match) throw new Error("a malformed verifier key");
    const parts = match.slice(1);
    const bytes = fromBase64(parts[2]);
    if (bytes.length !== 33 || bytes[0] !== 1) throw new Error("the verifier key is not an Ed25519 key");
    const keyHash = (await sha256(concat(utf8.encode(parts[0]), Uint8Array.of(0x0a), bytes))).slice(0, 4);
    if (hex(keyHash) !== parts[1]) throw new Error("the verifier key's hash does not match its key");
    const key = await crypto.subtle.importKey("raw", bytes.slice(1), { name: "Ed25519" }, false, ["verify"]);
    return { name: parts[0], keyHash, key };
  }

  async function checkNote(note, verifier) {
    const parsed = parseNote(note);
    const line = parsed.signatures.find((s) => s.name === verifier.name && equal(s.keyHash, verifier.keyHash));
    if (!line) throw new Error("the checkpoint of size " + parsed.size + " is not signed by " + verifier.name);
    const valid = await crypto.subtle.verify({ name: "Ed25519" }, verifier.key, line.signature, utf8.encode(parsed.body));
    if (!valid) throw new Error("the signature of the checkpoint of size " + parsed.size + " does not verify");
    return parsed;
  }

  /** Ed25519 over exact bytes with a raw base64 public key (a node's purge acknowledgement). */
  async function verifyEd25519(publicKeyBase64, signatureBase64, message) {
    const key = await crypto.subtle.importKey("raw", fromBase64(publicKeyBase64), { name: "Ed25519" }, false, ["verify"]);
    return crypto.subtle.verify({ name: "Ed25519" }, key, fromBase64(signatureBase64), utf8.encode(message));
  }

  /** RFC 9162 §2.1.3.2: verifies an inclusion proof of leaf `index` in a tree of `size` leaves. */
  async function verifyInclusion(index, size, leaf, proof, root) {
    if (index >= size) return false;
    let fn = index, sn = size - 1, r = leaf;
    for (const p of proof) {
      if (sn === 0) return false;
      if (fn % 2 === 1 || fn === sn) {
        r = await nodeHash(p, r);
        if (fn % 2 === 0) while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      } else {
        r = await nodeHash(r, p);
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    return sn === 0 && equal(r, root);
  }

  /** One record's detail (`GET /audit/records/{seq}`): its leaf, its proof and the checkpoint's signature. */
  async function verifyRecordProof(detail, verifierKey) {
    const verifier = await importVerifierKey(verifierKey);
    const note = await checkNote(detail.checkpoint, verifier);
    const leaf = await leafHash(utf8.encode(jcs(detail.record)));
    if (hex(leaf) !== detail.leafHash) throw new Error("the record does not hash to its stated leaf hash");
    if (note.size !== detail.treeSize) throw new Error("the proof is for a tree of another size than the checkpoint's");
    const included = await verifyInclusion(detail.record.seq, note.size, leaf, detail.inclusionProof.map(fromHex), note.root);
    if (!included) throw new Error("the inclusion proof does not lead to the checkpoint's root");
    return { treeSize: note.size, time: note.time };
  }

  const failure = (message, line) => ({ ok: false, message, line });

  /**
   * Checks an export (Docs/AuditFormat.md §6). `expectedKey`, when given, must be the key the
   * export names. Returns the first failure, or a summary.
   */
  async function verifyExport(text, expectedKey) {
    const lines = text.split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    let header;
    try { header = JSON.parse(lines[0]).header; } catch (_) { header = null; }
    if (!header || header.format !== "openkcm-audit-export/1") return failure("the first line is not an openkcm-audit-export/1 header", 1);
    if (expectedKey && header.key !== expectedKey) return failure("the export is signed with another key than the log's", 1);
    let verifier;
    try { verifier = await importVerifierKey(header.key); } catch (error) { return failure(error.message, 1); }
    let frontier, chain;
    try {
      frontier = new Frontier(header.start.size, header.start.frontier.map(fromHex));
      chain = fromHex(header.start.chain);
    } catch (error) { return failure("the header's start: " + error.message, 1); }
    const summary = { ok: true, records: 0, checkpoints: 0, firstTime: null, lastTime: null, treeSize: header.start.size, root: "", unsigned: 0, origin: header.origin };
    let signedSize = header.start.size;
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i];
      const number = i + 1;
      if (line.startsWith('{"checkpoint":')) {
        let note;
        try { note = await checkNote(JSON.parse(line).checkpoint, verifier); } catch (error) { return failure(error.message, number); }
        if (note.origin !== header.origin) return failure("a checkpoint of another log (" + note.origin + ")", number);
        if (note.size > frontier.size) return failure("the checkpoint of size " + note.size + " comes after only " + frontier.size + " records: records were removed", number);
        if (note.size < frontier.size) return failure("the checkpoint of size " + note.size + " comes after " + frontier.size + " records: records were inserted", number);
        if (!equal(note.root, await frontier.root())) return failure("the checkpoint of size " + note.size + " has another root than the records: a record was changed", number);
        summary.checkpoints += 1;
        signedSize = note.size;
        continue;
      }
      const prefix = '{"chain":"';
      const at = line.indexOf('","record":');
      if (!line.startsWith(prefix) || at !== prefix.length + 64 || !line.endsWith("}")) return failure("not a record line", number);
      const recordText = line.slice(at + '","record":'.length, line.length - 1);
      let record;
      try { record = JSON.parse(recordText); } catch (_) { return failure("a record that is not JSON", number); }
      try { if (jcs(record) !== recordText) return failure("record " + record.seq + " is not in canonical form", number); } catch (error) { return failure(error.message, number); }
      const expected = frontier.size;
      if (record.seq > expected) return failure("record " + expected + " is missing (found " + record.seq + ")", number);
      if (record.seq < expected) return failure("record " + record.seq + " is out of order or inserted (expected " + expected + ")", number);
      const leaf = await leafHash(utf8.encode(recordText));
      chain = await chainHash(chain, leaf);
      if (hex(chain) !== line.slice(prefix.length, at)) return failure("record " + record.seq + " was changed (its chain value does not match)", number);
      await frontier.append(leaf);
      summary.records += 1;
      summary.firstTime = summary.firstTime || record.time;
      summary.lastTime = record.time;
    }
    summary.treeSize = frontier.size;
    summary.root = hex(await frontier.root());
    summary.unsigned = frontier.size - signedSize;
    if (summary.checkpoints === 0) return failure("the export holds no signed checkpoint", lines.length);
    return summary;
  }

  // The primitives are exported too: the browser test runs them over the golden vectors in
  // Tests/AuditTests/Vectors, the ones the server's own verifier is held to.
  return { verifyExport, verifyRecordProof, verifyEd25519, parseNote, jcs,
           primitives: { hex, fromHex, leafHash, chainHash, Frontier, verifyInclusion, importVerifierKey, checkNote } };
})();
