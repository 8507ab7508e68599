#!/usr/bin/env bash
# DEV ONLY: generates the caf-broker development PKI, JWT keys and audit keys.
#
# Everything this script writes is committed to git and therefore public:
# never use any of it outside local development and tests.
#
# Idempotent: a key or certificate that already exists is kept, and derived
# files (jwks.json) are rewritten with the same content, so a second run
# changes nothing. Pass --force to throw everything away and start over.
#
# Needs bash and the openssl command line (1.1.1 or 3.x).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
umask 077

if [[ "${1:-}" == "--force" ]]; then
    rm -f ./*.pem ./*.key ./*.srl jwks.json
elif [[ $# -gt 0 ]]; then
    echo "usage: $0 [--force]" >&2
    exit 2
fi

DAYS_CA=3650
# A leaf must not outlive the CA that signed it.
DAYS_LEAF=3649
ORG="caf-broker DEV ONLY"
BANNER="DEV ONLY: caf-broker development material, public in git. Never use it outside local development and tests."

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Prints the banner then the PEM blocks of the given files, so that every PEM
# file says what it is before its first BEGIN line (PEM parsers skip such text).
with_banner() {
    local out="$1"
    shift
    { echo "# $BANNER"; cat "$@"; } >"$out"
}

# A PKCS#8 private key of the given openssl algorithm options.
new_key() {
    local out="$1"
    shift
    if [[ ! -s "$out" ]]; then
        openssl genpkey "$@" -out "$TMP/key.pem" 2>/dev/null
        with_banner "$out" "$TMP/key.pem"
        echo "created $out"
    fi
}

new_p256_key() { new_key "$1" -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pkeyopt ec_param_enc:named_curve; }
new_ed25519_key() { new_key "$1" -algorithm ED25519; }

# Issues a leaf certificate: issue_leaf NAME SUBJECT EXTENSIONS CHAIN [CA],
# where CHAIN=chain appends the CA after the leaf (a server's chain) and
# CHAIN=leaf writes the leaf alone; CA is the issuing CA's file stem, the dev
# CA (`ca`) unless told otherwise.
issue_leaf() {
    local name="$1" subject="$2" extensions="$3" chain="$4" ca="${5:-ca}"
    new_p256_key "$name.key.pem"
    if [[ ! -s "$name.pem" ]]; then
        printf '%s\n' "$extensions" >"$TMP/$name.ext"
        openssl req -new -key "$name.key.pem" -subj "$subject" -out "$TMP/$name.csr"
        openssl x509 -req -in "$TMP/$name.csr" -CA "$ca.pem" -CAkey "$ca.key.pem" \
            -set_serial "0x$(openssl rand -hex 16)" -days "$DAYS_LEAF" -sha256 \
            -extfile "$TMP/$name.ext" -out "$TMP/$name.crt" 2>/dev/null
        if [[ "$chain" == chain ]]; then
            with_banner "$name.pem" "$TMP/$name.crt" <(sed -n '/-----BEGIN/,/-----END/p' "$ca.pem")
        else
            with_banner "$name.pem" "$TMP/$name.crt"
        fi
        echo "created $name.pem"
    fi
}

# Base64url without padding of stdin.
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# A self-signed root CA: new_ca STEM COMMON_NAME writes STEM.pem and STEM.key.pem.
new_ca() {
    local stem="$1" cn="$2"
    new_p256_key "$stem.key.pem"
    if [[ ! -s "$stem.pem" ]]; then
        openssl req -new -x509 -key "$stem.key.pem" -sha256 -days "$DAYS_CA" \
            -set_serial "0x$(openssl rand -hex 16)" \
            -subj "/O=$ORG/CN=$cn" \
            -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -addext "subjectKeyIdentifier=hash" \
            -out "$TMP/$stem.crt"
        with_banner "$stem.pem" "$TMP/$stem.crt"
        echo "created $stem.pem"
    fi
}

# --- Certificate authority ---------------------------------------------------
new_ca ca "caf-broker DEV ONLY root CA"

# --- Server certificate ------------------------------------------------------
issue_leaf server "/O=$ORG/CN=localhost" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid" chain

# --- Client certificates of consular posts (CN = post code) ------------------
for post in TN-TUNIS MA-RABAT; do
    issue_leaf "client-$post" "/O=$ORG/CN=$post" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid" leaf
done

# A client certificate naming its post in a subjectAltName URI instead, with a
# common name that is no post code (`server.client_post_from = "san_uri"`).
issue_leaf client-uri-MA-RABAT "/O=$ORG/CN=consular-app" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=URI:urn:caf-broker:post:MA-RABAT
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid" leaf

# --- The broker's client certificate towards the CAF (mTLS upstream) ---------
# Presented by `upstream.kind = "http"`; `caf-broker simulate --client-ca ca.pem`
# accepts it.
issue_leaf client-broker "/O=$ORG/CN=caf-broker" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid" leaf

# --- A second CA that nothing trusts, for refusal tests ----------------------
# A server certificate and a client certificate it issued: the broker must
# refuse the first and the simulator the second.
new_ca other-ca "caf-broker DEV ONLY untrusted CA"
issue_leaf server-other-ca "/O=$ORG/CN=localhost" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid" chain other-ca
issue_leaf client-other-ca "/O=$ORG/CN=caf-broker" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid" leaf other-ca

# --- JWT keys ----------------------------------------------------------------
new_ed25519_key jwt-signing.key.pem
# Not in jwks.json: tokens it signs must be rejected.
new_ed25519_key jwt-other.key.pem
new_p256_key jwt-es256.key.pem

ed_x="$(openssl pkey -in jwt-signing.key.pem -pubout -outform DER | tail -c 32 | b64url)"
openssl pkey -in jwt-es256.key.pem -pubout -outform DER >"$TMP/es256.pub.der"
# The DER ends with the uncompressed point 04 || x || y, 32 bytes each.
ec_x="$(tail -c 64 "$TMP/es256.pub.der" | head -c 32 | b64url)"
ec_y="$(tail -c 32 "$TMP/es256.pub.der" | b64url)"

cat >jwks.json <<EOF
{"keys":[{"kty":"OKP","crv":"Ed25519","x":"$ed_x","kid":"dev-2026","alg":"EdDSA","use":"sig"},{"kty":"EC","crv":"P-256","x":"$ec_x","y":"$ec_y","kid":"dev-es256","alg":"ES256","use":"sig"}]}
EOF

# --- Audit log HMAC key (hex of 32 random bytes, no banner: read as is) -------
if [[ ! -s audit-hmac.key ]]; then
    openssl rand -hex 32 >audit-hmac.key
    echo "created audit-hmac.key"
fi

# --- Audit checkpoint signing key (Ed25519, PKCS#8) and its public key ----------
new_ed25519_key audit-checkpoint.key.pem
openssl pkey -in audit-checkpoint.key.pem -pubout -out "$TMP/audit-checkpoint.pub.pem" 2>/dev/null
with_banner audit-checkpoint.pub.pem "$TMP/audit-checkpoint.pub.pem"

# Public material may be world-readable; private keys stay owner-only.
chmod 644 ca.pem other-ca.pem server.pem server-other-ca.pem client-*.pem jwks.json audit-checkpoint.pub.pem
chmod 600 ./*.key.pem audit-hmac.key

# --- Self-check ----------------------------------------------------------------
openssl verify -CAfile ca.pem <(sed -n '/-----BEGIN/,/-----END/p;/-----END/q' server.pem) >/dev/null
for client in TN-TUNIS MA-RABAT uri-MA-RABAT broker; do
    openssl verify -CAfile ca.pem -purpose sslclient \
        <(sed -n '/-----BEGIN/,/-----END/p;/-----END/q' "client-$client.pem") >/dev/null
done
openssl verify -CAfile other-ca.pem -purpose sslserver \
    <(sed -n '/-----BEGIN/,/-----END/p;/-----END/q' server-other-ca.pem) >/dev/null
openssl verify -CAfile other-ca.pem -purpose sslclient \
    <(sed -n '/-----BEGIN/,/-----END/p;/-----END/q' client-other-ca.pem) >/dev/null
echo "certs-dev is up to date (DEV ONLY)"
