// Checks an audit entry's inclusion proof in the browser (RFC 6962 / RFC 9162 §2.1.3.2):
// leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right), with WebCrypto; the
// recomputed root must equal the root hash in the checkpoint note's third line. The
// checkpoint's signature is NOT checked here (the page says so).
"use strict";
(function () {
  function fromBase64(text) {
    var binary = atob(text);
    var out = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) { out[i] = binary.charCodeAt(i); }
    return out;
  }
  function concat(prefix, parts) {
    var length = 1;
    parts.forEach(function (p) { length += p.length; });
    var out = new Uint8Array(length);
    out[0] = prefix;
    var at = 1;
    parts.forEach(function (p) { out.set(p, at); at += p.length; });
    return out;
  }
  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  }
  function equal(a, b) {
    if (a.length !== b.length) { return false; }
    var diff = 0;
    for (var i = 0; i < a.length; i++) { diff |= a[i] ^ b[i]; }
    return diff === 0;
  }
  // The root an audit path leads to, or null when the path cannot be one for this index/size.
  async function rootFromPath(index, size, leaf, path) {
    if (!(index < size)) { return null; }
    var fn = index, sn = size - 1, r = leaf;
    for (var i = 0; i < path.length; i++) {
      var p = path[i];
      if (sn === 0) { return null; }
      if (fn % 2 === 1 || fn === sn) {
        r = await sha256(concat(1, [p, r]));
        if (fn % 2 === 0) {
          while (!(fn % 2 === 1 || fn === 0)) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
        }
      } else {
        r = await sha256(concat(1, [r, p]));
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    return sn === 0 ? r : null;
  }
  // C2SP checkpoint body: origin, tree size, base64 root hash (then the signature lines).
  function parseCheckpoint(note) {
    var lines = note.split("\n");
    if (lines.length < 3 || !/^[0-9]+$/.test(lines[1])) { return null; }
    return { origin: lines[0], size: parseInt(lines[1], 10), root: fromBase64(lines[2]) };
  }
  async function check(element) {
    var result = element.querySelector(".proof-result");
    function show(state, text) {
      result.setAttribute("data-state", state);
      result.textContent = text;
    }
    try {
      var entry = fromBase64(element.getAttribute("data-entry"));
      var index = parseInt(element.getAttribute("data-index"), 10);
      var size = parseInt(element.getAttribute("data-tree-size"), 10);
      var proofText = element.getAttribute("data-proof").trim();
      var path = proofText ? proofText.split(/\s+/).map(fromBase64) : [];
      var checkpoint = parseCheckpoint(element.getAttribute("data-checkpoint"));
      if (checkpoint === null) { show("failed", "Not verified: the checkpoint cannot be read."); return; }
      if (checkpoint.size !== size) {
        show("failed", "Not verified: the proof is for size " + size + ", the checkpoint has size " + checkpoint.size + ".");
        return;
      }
      var leaf = await sha256(concat(0, [entry]));
      var root = await rootFromPath(index, size, leaf, path);
      if (root !== null && equal(root, checkpoint.root)) {
        show("verified", "Verified: the entry is in the log; the recomputed root equals the checkpoint's root hash.");
      } else {
        show("failed", "Not verified: the recomputed root does not equal the checkpoint's root hash.");
      }
    } catch (error) {
      show("failed", "Not verified: " + error.message);
    }
  }
  function start() { document.querySelectorAll("[data-proof-check]").forEach(check); }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
