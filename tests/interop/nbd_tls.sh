#!/usr/bin/env bash
# Proves keel serve --tls-creds with real TLS clients: x509 (CA, server and client certificates
# made here with certtool, verify-peer on as QEMU's default) and PSK; nbdinfo, nbdcopy, qemu-img
# convert and qemu-io (--object tls-creds-*,endpoint=client) read and write through it; a client
# without TLS gets ERR_TLS_REQD for every option and no export data; a certificate from another
# CA and a wrong PSK fail the handshake; hostile bytes before and after STARTTLS (oversized
# option, STARTTLS with data, non-TLS bytes, silence) are dropped under the handshake limit;
# --tls-authz admits exactly the client qemu-nbd admits for the same authz-simple identity.
# Usage: bash nbd_tls.sh /path/to/keel
set -euo pipefail
KEEL=$(realpath "${1:?usage: $0 /path/to/keel}")
source "$(dirname "$(realpath "$0")")/nbd_lib.bash"
nbd_setup tls
command -v certtool >/dev/null || fail "certtool missing (gnutls-bin)"
start() {  # start SOCKET ARGS...
  local sock=$1; shift
  rm -f "$sock"
  serve_fork "$sock.pid" "$KEEL" serve -t -k "$sock" "$@"
}
# make_ca DIR CN: a CA key and self-signed certificate in DIR
make_ca() {
  mkdir -p "$1"
  certtool --generate-privkey --outfile "$1/ca-key.pem" 2>/dev/null
  printf 'cn = %s\nca\ncert_signing_key\n' "$2" >"$1/ca.info"
  certtool --generate-self-signed --load-privkey "$1/ca-key.pem" --template "$1/ca.info" \
    --outfile "$1/ca-cert.pem" 2>/dev/null
}
# make_cert DIR NAME TEMPLATE: NAME-key.pem and NAME-cert.pem signed by DIR's CA
make_cert() {
  certtool --generate-privkey --outfile "$1/$2-key.pem" 2>/dev/null
  printf '%b' "$3" >"$1/$2.info"
  certtool --generate-certificate --load-ca-certificate "$1/ca-cert.pem" --load-ca-privkey "$1/ca-key.pem" \
    --load-privkey "$1/$2-key.pem" --template "$1/$2.info" --outfile "$1/$2-cert.pem" 2>/dev/null
}
SERVER_INFO='organization = Keel\ncn = localhost\ndns_name = localhost\ntls_www_server\nencryption_key\nsigning_key\n'
CLIENT_INFO='organization = Keel\ncn = client\ntls_www_client\nencryption_key\nsigning_key\n'
X=$T/x509
make_ca "$X" "Keel test CA"
make_cert "$X" server "$SERVER_INFO"
make_cert "$X" client "$CLIENT_INFO"
# A client whose certificate comes from another CA.
B=$T/bad
make_ca "$B" "Other CA"
make_cert "$B" client "$CLIENT_INFO"
cp "$X/ca-cert.pem" "$B/ca-cert.pem"  # it trusts our server, but we do not trust it

IMG=$T/a.qcow2
qemu-img create -q -f qcow2 "$IMG" 32M
head -c 8M /dev/urandom >"$T/src.raw"
S=$T/x.sock
XOBJ="tls-creds-x509,id=tls0,dir=$X,endpoint=server"
start "$S" --handshake-limit 2 --object "$XOBJ" --tls-creds tls0 -f qcow2 "$IMG"
U="nbds+unix:///?socket=$S&tls-certificates=$X"

echo "== x509: nbdinfo, nbdcopy, qemu-img, qemu-io"
timeout 30 nbdinfo "$U" >"$T/info" || fail "nbdinfo over TLS"
grep -q "with TLS" "$T/info" || fail "nbdinfo: $(cat "$T/info")"
timeout 60 nbdcopy "$T/src.raw" "$U" || fail "nbdcopy into the export"
timeout 60 nbdcopy "$U" "$T/back.raw" || fail "nbdcopy out of the export"
cmp -n $((8 << 20)) "$T/src.raw" "$T/back.raw" || fail "nbdcopy round trip differs"
QOBJ="tls-creds-x509,id=c0,dir=$X,endpoint=client"
QNBD="driver=nbd,server.type=unix,server.path=$S,tls-creds=c0,tls-hostname=localhost"
timeout 60 qemu-img compare --object "$QOBJ" --image-opts "driver=raw,file.driver=file,file.filename=$T/src.raw" \
  "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=$S,file.tls-creds=c0,file.tls-hostname=localhost,size=$((8 << 20))" \
  >/dev/null || fail "qemu-img compare over TLS"
timeout 60 qemu-io --object "$QOBJ" --image-opts "$QNBD" -c 'write -P 0x5c 16M 1M' -c 'read -P 0x5c 16M 1M' \
  >"$T/qio" 2>&1 || fail "qemu-io over TLS: $(cat "$T/qio")"
grep -qi "fail\|error" "$T/qio" && fail "qemu-io over TLS: $(cat "$T/qio")"
timeout 60 qemu-img convert --object "$QOBJ" -O raw --image-opts "$QNBD" "$T/all.raw" || fail "qemu-img convert over TLS"
cmp -n $((8 << 20)) "$T/src.raw" "$T/all.raw" || fail "qemu-img convert over TLS differs"

echo "== SIGKILL after a flush over TLS: the image is consistent and the write is there"
cp "$IMG" "$T/k.qcow2"
start "$T/k.sock" --object "$XOBJ" --tls-creds tls0 -f qcow2 "$T/k.qcow2"
timeout 60 qemu-io --object "$QOBJ" --image-opts \
  "driver=nbd,server.type=unix,server.path=$T/k.sock,tls-creds=c0,tls-hostname=localhost" \
  -c 'write -P 0x77 20M 2M' -c 'flush' >"$T/qio" 2>&1 || fail "qemu-io before SIGKILL: $(cat "$T/qio")"
kill9_wait "$(cat "$T/k.sock.pid")" || fail "server did not exit after SIGKILL"
wait_unlocked "$T/k.qcow2" || fail "the image stayed locked after SIGKILL"
qemu-img check -q "$T/k.qcow2" || fail "qemu-img check after SIGKILL over TLS"
qemu-io -f qcow2 -c 'read -P 0x77 20M 2M' "$T/k.qcow2" | grep -qi fail && fail "flushed write lost after SIGKILL"

echo "== a client without TLS gets nothing but ERR_TLS_REQD"
if timeout 30 nbdinfo "nbd+unix:///?socket=$S" >"$T/plain" 2>&1; then fail "plain client got in: $(cat "$T/plain")"; fi
/usr/bin/python3 - "$S" <<'EOF' || fail "raw plain client"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
def rx(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: raise SystemExit("closed")
        b += c
    return b
rx(18); s.sendall(struct.pack(">I", 3))
for opt, data in [(8, b""), (3, b""), (6, struct.pack(">IH", 0, 0)), (7, struct.pack(">IH", 0, 0)),
                  (9, struct.pack(">II", 0, 0))]:
    s.sendall(struct.pack(">QII", 0x49484156454F5054, opt, len(data)) + data)
    magic, o, typ, ln = struct.unpack(">QIII", rx(20)); rx(ln)
    assert typ == 0x80000005, (opt, hex(typ))  # NBD_REP_ERR_TLS_REQD
# EXPORT_NAME: the server closes without sending export data.
s.sendall(struct.pack(">QII", 0x49484156454F5054, 1, 0))
assert s.recv(1) == b"", "EXPORT_NAME before TLS was answered"
EOF

echo "== hostile bytes around STARTTLS: dropped, the server serves the next client"
/usr/bin/python3 - "$S" <<'EOF' || fail "hostile STARTTLS clients"
import socket, struct, sys, time
def conn():
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(20)
    b = b""
    while len(b) < 18: b += s.recv(18 - len(b))
    s.sendall(struct.pack(">I", 3))
    return s
def closed(s):
    try:
        while True:
            c = s.recv(4096)
            if not c: return True
    except (ConnectionResetError, BrokenPipeError):
        return True
def opt(s, o, data=b""):
    s.sendall(struct.pack(">QII", 0x49484156454F5054, o, len(data)) + data)
# An oversized option before TLS: skipped, ERR_TLS_REQD, haggling goes on.
s = conn()
s.sendall(struct.pack(">QII", 0x49484156454F5054, 6, 1 << 20) + bytes(1 << 20))
hdr = s.recv(20); assert struct.unpack(">QIII", hdr)[2] == 0x80000005, hdr
s.close()
# STARTTLS with data: ERR_INVALID, then the connection is closed.
s = conn(); opt(s, 5, b"x"); assert closed(s)
# STARTTLS, then bytes that are not a TLS ClientHello: the handshake fails, connection closed.
s = conn(); opt(s, 5)
s.recv(20)
s.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(300)); assert closed(s)
# STARTTLS, then silence: cut by --handshake-limit (2 s here), not held forever.
s = conn(); opt(s, 5); s.recv(20)
t = time.time(); assert closed(s); assert time.time() - t < 10, time.time() - t
EOF
timeout 30 nbdinfo "$U" >/dev/null || fail "server no longer serves after hostile clients"

echo "== wrong certificate, wrong PSK: handshake fails"
if timeout 30 nbdinfo "nbds+unix:///?socket=$S&tls-certificates=$B" >"$T/badcert.out" 2>&1; then
  fail "client with an untrusted certificate got in"
fi
stop_server "$S"
P=$T/psk
mkdir -p "$P"
echo "alice:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$P/keys.psk"
echo "alice:$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$T/wrong.psk"
start "$S" --object "tls-creds-psk,id=tls0,dir=$P,endpoint=server" --tls-creds tls0 -f qcow2 "$IMG"
timeout 30 nbdinfo "nbds+unix://alice@/?socket=$S&tls-psk-file=$P/keys.psk" >"$T/pinfo" || fail "nbdinfo with PSK"
grep -q "with TLS" "$T/pinfo" || fail "PSK: $(cat "$T/pinfo")"
timeout 60 nbdcopy "nbds+unix://alice@/?socket=$S&tls-psk-file=$P/keys.psk" "$T/pback.raw" || fail "nbdcopy with PSK"
cmp -n $((8 << 20)) "$T/src.raw" "$T/pback.raw" || fail "PSK read differs"
if timeout 30 nbdinfo "nbds+unix://alice@/?socket=$S&tls-psk-file=$T/wrong.psk" >"$T/pbad" 2>&1; then
  fail "client with a wrong PSK got in"
fi
stop_server "$S"
qemu-img check -q "$IMG" || fail "qemu-img check after the TLS runs"

echo "== --tls-authz: only the named client (x509 DN as qemu-nbd spells it, PSK user)"
DN="O=Keel,,CN=client"  # ",," is a literal comma in an --object value
authz_ok() {  # authz_ok SERVER(keel|qemu) IDENTITY URI: 0 if the client gets in
  local which=$1 id=$2 uri=$3 rc=0
  rm -f "$T/z.sock"
  local server=("$KEEL" serve)
  [ "$which" = keel ] || server=(qemu-nbd)
  serve_fork "$T/z.pid" "${server[@]}" -k "$T/z.sock" --object "$XOBJ" \
    --object "authz-simple,id=z0,identity=$id" --tls-creds tls0 --tls-authz z0 -f qcow2 "$IMG"
  timeout 30 nbdinfo "$uri" >/dev/null 2>&1 || rc=$?
  stop_server "$T/z"
  return $rc
}
ZU="nbds+unix:///?socket=$T/z.sock&tls-certificates=$X"
for s in qemu keel; do
  authz_ok "$s" "$DN" "$ZU" || fail "$s: the client named by --tls-authz was refused"
  authz_ok "$s" "O=Keel,,CN=someone-else" "$ZU" && fail "$s: a client not named by --tls-authz got in"
done
grep -q "TLS x509 authz check for O=Keel,CN=client is denied" "$T/serve.log" || fail "no authz log line"
PSKOBJ="tls-creds-psk,id=tls0,dir=$P,endpoint=server"
serve_fork "$T/z.pid" "$KEEL" serve -k "$T/z.sock" --object "$PSKOBJ" \
  --object "authz-simple,id=z0,identity=bob" --tls-creds tls0 --tls-authz z0 -f qcow2 "$IMG"
if timeout 30 nbdinfo "nbds+unix://alice@/?socket=$T/z.sock&tls-psk-file=$P/keys.psk" >/dev/null 2>&1; then
  fail "PSK user alice got in with --tls-authz naming bob"
fi
stop_server "$T/z"
serve_fork "$T/z.pid" "$KEEL" serve -k "$T/z.sock" --object "$PSKOBJ" \
  --object "authz-simple,id=z0,identity=alice" --tls-creds tls0 --tls-authz z0 -f qcow2 "$IMG"
timeout 30 nbdinfo "nbds+unix://alice@/?socket=$T/z.sock&tls-psk-file=$P/keys.psk" >/dev/null 2>&1 ||
  fail "PSK user alice refused with --tls-authz naming alice"
stop_server "$T/z"
"$KEEL" serve -k "$T/e.sock" --object "authz-simple,id=z0,identity=x" --tls-authz z0 "$IMG" 2>"$T/err" &&
  fail "--tls-authz without --tls-creds started"
grep -q "not permitted without --tls-creds" "$T/err" || fail "authz without creds: $(cat "$T/err")"

echo "== bad credentials: one-line errors"
"$KEEL" serve -k "$T/e.sock" --object "tls-creds-x509,id=t,dir=$T/none,endpoint=server" --tls-creds t \
  "$IMG" 2>"$T/err" && fail "started with missing credentials"
[ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "server-cert.pem" "$T/err" || fail "missing cert: $(cat "$T/err")"
"$KEEL" serve -k "$T/e.sock" --object "tls-creds-x509,id=t,dir=$X,endpoint=client" --tls-creds t \
  "$IMG" 2>"$T/err" && fail "started with client credentials"
grep -q "Expecting TLS credentials with a server endpoint" "$T/err" || fail "endpoint: $(cat "$T/err")"
"$KEEL" serve -k "$T/e.sock" --tls-creds nope "$IMG" 2>"$T/err" && fail "started with unknown credentials"
grep -q "nope" "$T/err" || fail "unknown id: $(cat "$T/err")"
echo PASS
