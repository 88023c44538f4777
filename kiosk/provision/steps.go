package provision

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/setupbin"
)

// The spec §6 steps that the PSK run (provision.go) and the PKI run
// (pki.go) make the same way; each run keeps its own bookkeeping.

// syncTime is step 2: the device's clock from the kiosk's.
func syncTime(ctx context.Context, c *wsman.Client) error {
	tm1 := time.Now()
	ta0, err := c.GetLowAccuracyTimeSynch(ctx)
	if err != nil {
		return fmt.Errorf("GetLowAccuracyTimeSynch: %w", err)
	}
	if err := c.SetHighAccuracyTimeSynch(ctx, ta0, tm1, time.Now()); err != nil {
		return fmt.Errorf("SetHighAccuracyTimeSynch: %w", err)
	}
	return nil
}

// devicePublicKey reads the public half of the key pair ref names (step 4
// signs it).
func devicePublicKey(ctx context.Context, c *wsman.Client, ref *wsman.EndpointReference) (*rsa.PublicKey, error) {
	var kp keyPair
	if err := c.Get(ctx, wsman.URIPublicPrivateKeyPair, ref.Selectors, &kp); err != nil {
		return nil, fmt.Errorf("reading AMT_PublicPrivateKeyPair: %w", err)
	}
	pub, err := x509.ParsePKCS1PublicKey(kp.DERKey)
	if err != nil {
		return nil, fmt.Errorf("device public key: %w", err)
	}
	return pub, nil
}

// bindCert is step 5: the certificate bound to TLS; existed reports that
// the device had the binding already (a retried run).
func bindCert(ctx context.Context, c *wsman.Client, cert *wsman.EndpointReference) (existed bool, err error) {
	_, err = c.CreateTLSCredentialContext(ctx, cert)
	if errors.Is(err, wsman.ErrAlreadyExists) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("creating AMT_TLSCredentialContext: %w", err)
	}
	return false, nil
}

// enableTLS is step 6: server TLS on the network interface, without
// mutual authentication; read first, written only when needed.
func enableTLS(ctx context.Context, c *wsman.Client) error {
	ts, err := c.GetTLSSettingData(ctx, wsman.TLSSettingsNetwork)
	if err != nil {
		return fmt.Errorf("reading AMT_TLSSettingData: %w", err)
	}
	if ts.Enabled && !ts.MutualAuthentication {
		return nil
	}
	ts.Enabled, ts.MutualAuthentication = true, false
	if _, err := c.PutTLSSettingData(ctx, ts); err != nil {
		return fmt.Errorf("writing AMT_TLSSettingData: %w", err)
	}
	return nil
}

// setMEBx is step 9: the MEBx password becomes the machine's generated
// one (the record's is on a plaintext stick).
func setMEBx(ctx context.Context, c *wsman.Client, pw setupbin.Password) error {
	if err := c.SetMEBxPassword(ctx, wsman.Secret(pw.Reveal())); err != nil {
		return fmt.Errorf("SetMEBxPassword: %w", err)
	}
	return nil
}
