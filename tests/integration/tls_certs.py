"""Generates the test PKI with openssl, at test time, into a directory.

    /usr/bin/python3 tls_certs.py DIR     (or: tls_certs.generate(DIR))

Writes (EC P-256 keys, valid for one day):
  ca.pem ca.key                the CA the server and the clients trust
  server.pem server.key        server certificate by ca, SAN DNS:attn.test
                               and IP:127.0.0.1
  client.pem client.key        client certificate by ca (clientAuth)
  other_ca.pem other_ca.key    an unrelated CA
  other_client.pem .key        client certificate by other_ca
  other_server.pem .key        server certificate by other_ca (same SANs)
"""
import os
import subprocess
import sys

SERVER_NAME = "attn.test"


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True,
                   timeout=60)


def _key_and_csr(name, cn, cwd):
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
             cwd=cwd)


def _ca(name, cn, cwd):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1",
             "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)


def _leaf(name, ca, cn, extensions, cwd):
    _key_and_csr(name, cn, cwd)
    with open(os.path.join(cwd, f"{name}.ext"), "w") as f:
        f.write(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext",
             cwd=cwd)


def generate(directory):
    """Writes the files listed above into `directory` (created if needed)."""
    os.makedirs(directory, exist_ok=True)
    server_ext = (f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1\n"
                  "extendedKeyUsage=serverAuth\n")
    client_ext = "extendedKeyUsage=clientAuth\n"
    for prefix in ("", "other_"):
        ca = f"{prefix}ca"
        _ca(ca, f"attnserve test {ca}", directory)
        _leaf(f"{prefix}server", ca, SERVER_NAME, server_ext, directory)
        _leaf(f"{prefix}client", ca, f"attn test {prefix}client", client_ext, directory)
    return directory


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: tls_certs.py DIR")
    generate(sys.argv[1])
