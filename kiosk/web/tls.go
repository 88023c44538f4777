package web

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/provstick/provstick/kiosk/ca"
)

// DefaultHosts are the names a console certificate covers when none are
// configured: localhost, the loopback addresses and the host name.
func DefaultHosts() []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		hosts = append(hosts, h)
	}
	return hosts
}

// ServerCertificate makes a TLS server certificate for the console, signed
// by the kiosk CA, for the given host names and IP addresses (the first
// one is the subject CN). The key is RSA 2048, made here and never stored:
// each start signs a new one, and browsers that trust the kiosk CA accept
// it. The CA signs it as it signs a device certificate (kiosk/ca Sign:
// server authentication, the CA's device validity); the CA's urn:uuid SAN
// then carries the first host name rather than a machine UUID.
func ServerCertificate(c *ca.CA, hosts []string) (tls.Certificate, error) {
	if c == nil {
		return tls.Certificate{}, errors.New("making the console certificate: no kiosk CA")
	}
	if len(hosts) == 0 {
		return tls.Certificate{}, errors.New("making the console certificate: no host names")
	}
	d := ca.Device{UUID: hosts[0]}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			d.IPs = append(d.IPs, ip)
		} else {
			d.Hosts = append(d.Hosts, h)
		}
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("making the console key: %w", err)
	}
	der, err := c.Sign(&key.PublicKey, d)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("making the console certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("making the console certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, c.Certificate().Raw}, PrivateKey: key, Leaf: leaf}, nil
}
