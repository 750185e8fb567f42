#!/bin/sh
# Regenerates the signed test fixtures with the openssl CLI (run from anywhere):
#   sh enforcer/src/identity/aws/testdata/generate.sh
#
# signer.pem stands in for an AWS region certificate (region "xx-test-1" in the tests) and
# other.pem is a second, untrusted signer. Their private keys live only in a temporary
# directory. Signatures are written exactly as IMDS serves /instance-identity/rsa2048: base64
# of a CMS SignedData (DER, or BER with -stream), no PEM armour, lines of 64 characters.
# The aws-us-west-2.* pair is not generated here: see README.md.
set -eu
cd "$(dirname "$0")"
keys=$(mktemp -d)
trap 'rm -rf "$keys"' EXIT

for who in signer other; do
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 36500 \
        -subj "/O=enforcer test/CN=$who" -keyout "$keys/$who.key" -out "$who.pem" 2>/dev/null
done

# Documents in AWS's layout: two-space indent, " : ", no trailing newline.
document() { # instance-id image-id
    printf '{\n  "accountId" : "111122223333",\n  "architecture" : "x86_64",\n  "availabilityZone" : "xx-test-1b",\n  "billingProducts" : null,\n  "devpayProductCodes" : null,\n  "marketplaceProductCodes" : null,\n  "imageId" : "%s",\n  "instanceId" : "%s",\n  "instanceType" : "m5.large",\n  "kernelId" : null,\n  "pendingTime" : "2024-05-01T10:00:00Z",\n  "privateIp" : "10.0.1.23",\n  "ramdiskId" : null,\n  "region" : "xx-test-1",\n  "version" : "2017-09-30"\n}' "$2" "$1"
}
document i-0aaaaaaaaaaaaaaaa ami-0123456789abcdef0 > doc-a.json
document i-0bbbbbbbbbbbbbbbb ami-0fedcba9876543210 > doc-b.json

sign() { # document signer output [openssl cms options...]
    doc=$1 who=$2 out=$3
    shift 3
    openssl cms -sign -binary -md sha256 -outform DER -in "$doc" \
        -signer "$who.pem" -inkey "$keys/$who.key" "$@" | base64 -w 64 > "$out"
}
sign doc-a.json signer a.rsa2048 -nodetach -nocerts                 # signed attributes, DER
sign doc-a.json signer a-noattr.rsa2048 -nodetach -nocerts -noattr  # no signed attributes
sign doc-a.json signer a-ber.rsa2048 -nodetach -nocerts -stream     # BER, indefinite lengths, as AWS
sign doc-a.json signer a-detached.rsa2048 -nocerts                  # content not embedded
sign doc-b.json signer b.rsa2048 -nodetach -nocerts
sign doc-a.json other a-other.rsa2048 -nodetach -nocerts            # untrusted signer
sign doc-a.json other a-other-certs.rsa2048 -nodetach               # ... embedding its certificate
