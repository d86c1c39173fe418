#!/usr/bin/env python3
"""Sends N random bytes through a SOCKS5 proxy to an echo server and checks the
echo's SHA-256; also a few request/response round trips."""
import hashlib, os, socket, struct, sys, threading
proxy_host, proxy_port, dst_ip, dst_port, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
s = socket.create_connection((proxy_host, proxy_port), timeout=30)
s.sendall(b"\x05\x01\x00")
assert s.recv(2) == b"\x05\x00"
s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(dst_ip) + struct.pack(">H", dst_port))
rep = s.recv(10)
assert rep[1] == 0, f"SOCKS5 reply {rep[1]}"
for i in range(20):
    msg = os.urandom(100 + i)
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        got += s.recv(len(msg) - len(got))
    assert got == msg
data = os.urandom(size)
sent = hashlib.sha256(data).hexdigest()
def send():
    view = memoryview(data)
    for off in range(0, len(data), 1 << 16):
        s.sendall(view[off:off + (1 << 16)])
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send); t.start()
h = hashlib.sha256(); n = 0
while True:
    b = s.recv(1 << 16)
    if not b:
        break
    h.update(b); n += len(b)
t.join()
ok = n == size and h.hexdigest() == sent
print(f"{'OK' if ok else 'MISMATCH'} {n} bytes echoed, sha256 {h.hexdigest()[:16]} (sent {sent[:16]}), 20 round trips")
sys.exit(0 if ok else 1)
