#!/usr/bin/env bash
# Make a throwaway CA and a server certificate for 127.0.0.1 / localhost
# signed by it (P-256 keys, valid two days), for end-to-end tests over TLS.
#
#   tests/e2e/helpers/make-ca.sh DIR
#
# Writes DIR/server.crt and DIR/server.key (for wharf serve --tls-cert /
# --tls-key), DIR/ca.key, and DIR/clients/ca.crt: a directory holding only
# the CA certificate, as skopeo/podman/buildah want it for --cert-dir.
set -euo pipefail
dir=${1:?usage: make-ca.sh DIR}
mkdir -p "$dir/clients"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=Wharf e2e CA" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/clients/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
    >"$dir/ext.cnf"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/clients/ca.crt" -CAkey "$dir/ca.key" \
    -CAserial "$dir/ca.srl" -CAcreateserial -days 2 -extfile "$dir/ext.cnf" -out "$dir/server.crt" 2>/dev/null
