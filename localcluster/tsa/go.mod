// A minimal RFC 3161 time-stamping authority for the tests: github.com/digitorus/timestamp (the
// library sigstore's timestamp-authority builds on) signing with a test CA's key. Built and cached
// by aicert_localcluster.tsa. Nothing here is product code.
module aicert.dev/localcluster-tsa

go 1.26.0

require github.com/digitorus/timestamp v0.0.0-20231217203849-220c5c2851b7

require github.com/digitorus/pkcs7 v0.0.0-20230713084857-e76b763bdc49 // indirect
