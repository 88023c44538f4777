package provision

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/provstick/provstick/internal/wsman"
	"github.com/provstick/provstick/kiosk/ca"
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

// tlsCheck is what reconnectTLS checks after the commit.
type tlsCheck struct {
	CA       *ca.CA
	UUID     string
	Addr     string // host:port of 16993
	Password setupbin.Password
	// Want is the certificate the run added (nil: any the kiosk CA signed
	// for this UUID, e.g. a PSK run resumed after its commit).
	Want []byte
	// Legacy allows TLS 1.0 and the RSA suites older firmware needs (PKI
	// connections only).
	Legacy                     bool
	VerifyTimeout, StepTimeout time.Duration
	Log                        *slog.Logger
}

// reconnectTLS is the verification after step 11: a TLS connection to the
// device trusting only the kiosk CA (chain and CN = UUID; AMT's address is
// not in the certificate), as the new admin, until the device answers
// post-provisioning or VerifyTimeout passes; then, if set, after(ctx, c).
func reconnectTLS(ctx context.Context, v tlsCheck, after func(context.Context, *wsman.Client)) error {
	ctx, cancel := context.WithTimeout(ctx, v.VerifyTimeout)
	defer cancel()
	cfg := &tls.Config{
		InsecureSkipVerify: true, // verified below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no certificate")
			}
			if _, err := v.CA.Verify(raw[0], v.UUID); err != nil {
				return err
			}
			if v.Want != nil && !bytes.Equal(raw[0], v.Want) {
				return errors.New("the device presents a kiosk-signed certificate other than the one this kiosk added")
			}
			return nil
		},
	}
	if v.Legacy {
		cfg.MinVersion, cfg.CipherSuites = tls.VersionTLS10, PKICipherSuites
	}
	tr := &http.Transport{TLSClientConfig: cfg, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c, err := wsman.NewClient(wsman.Options{Endpoint: "https://" + v.Addr + "/wsman", Password: wsman.Secret(v.Password.Reveal()),
		HTTPClient: &http.Client{Transport: tr}, Logger: v.Log})
	if err != nil {
		return err
	}
	// First retry after 100 ms (PSK) or 50 ms (PKI), as the two runs did.
	backoff := 100 * time.Millisecond
	if v.Legacy {
		backoff = 50 * time.Millisecond
	}
	for {
		sctx, scancel := context.WithTimeout(ctx, v.StepTimeout)
		sc, err := c.GetSetupAndConfigurationService(sctx)
		scancel()
		if err == nil {
			if sc.ProvisioningState != wsman.StatePost {
				return fmt.Errorf("after commit the device reports %v", sc.ProvisioningState)
			}
			if after != nil {
				after(ctx, c)
			}
			return nil
		}
		if errors.Is(err, wsman.ErrUnauthorized) || ctx.Err() != nil || Classify(StepVerify, err).Class != ClassUnreachable {
			return fmt.Errorf("reconnecting over TLS: %w", err)
		}
		// AMT is restarting its network stack: try again shortly.
		select {
		case <-time.After(backoff):
			backoff = min(2*backoff, 2*time.Second)
		case <-ctx.Done():
			return fmt.Errorf("reconnecting over TLS: %w", err)
		}
	}
}
