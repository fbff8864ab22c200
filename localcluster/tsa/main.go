// Command tsa is a minimal RFC 3161 time-stamping authority for the tests (not product code): it
// answers POSTed TimeStampReqs with TimeStampResps signed by the key and certificate it is given.
//
//	tsa -cert tsa.pem -key tsa-key.pem [-chain intermediates.pem] [-time 2025-03-01T00:00:00Z]
//
// It listens on 127.0.0.1 (a free port) and prints "http://127.0.0.1:PORT/" as its first line.
// -time fixes the time it certifies, so a test can make a token dated while a short-lived AK
// certificate was valid and verify it after that certificate expired.
package main

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/digitorus/timestamp"
)

var policy = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 2} // a test policy OID

func readPEM(path string, kind string) []*pem.Block {
	data, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	var blocks []*pem.Block
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type == kind {
			blocks = append(blocks, block)
		}
	}
	if len(blocks) == 0 {
		log.Fatalf("%s: no %s", path, kind)
	}
	return blocks
}

func main() {
	certPath := flag.String("cert", "", "the TSA certificate (PEM)")
	keyPath := flag.String("key", "", "its private key (PKCS#8 PEM)")
	chainPath := flag.String("chain", "", "intermediate certificates to include (PEM), optional")
	fixed := flag.String("time", "", "certify this time (RFC 3339) instead of the clock's")
	flag.Parse()

	cert, err := x509.ParseCertificate(readPEM(*certPath, "CERTIFICATE")[0].Bytes)
	if err != nil {
		log.Fatal(err)
	}
	parsedKey, err := x509.ParsePKCS8PrivateKey(readPEM(*keyPath, "PRIVATE KEY")[0].Bytes)
	if err != nil {
		log.Fatal(err)
	}
	signer, ok := parsedKey.(crypto.Signer)
	if !ok {
		log.Fatal("the key cannot sign")
	}
	var chain []*x509.Certificate
	if *chainPath != "" {
		for _, block := range readPEM(*chainPath, "CERTIFICATE") {
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				log.Fatal(err)
			}
			chain = append(chain, c)
		}
	}
	var at time.Time
	if *fixed != "" {
		if at, err = time.Parse(time.RFC3339, *fixed); err != nil {
			log.Fatal(err)
		}
	}
	serial := int64(0)

	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		if err != nil || r.Method != http.MethodPost {
			http.Error(w, "POST a TimeStampReq", http.StatusBadRequest)
			return
		}
		req, err := timestamp.ParseRequest(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		now := at
		if now.IsZero() {
			now = time.Now()
		}
		serial++
		ts := timestamp.Timestamp{
			HashAlgorithm:     req.HashAlgorithm,
			HashedMessage:     req.HashedMessage,
			Time:              now.UTC(),
			Accuracy:          time.Second,
			SerialNumber:      big.NewInt(serial),
			Policy:            policy,
			Nonce:             req.Nonce,
			AddTSACertificate: req.Certificates,
			Certificates:      chain,
		}
		resp, err := ts.CreateResponseWithOpts(cert, signer, crypto.SHA256)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/timestamp-reply")
		_, _ = w.Write(resp)
	})
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("http://%s/\n", listener.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(listener, nil))
}
