package agent

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/provstick/provstick/internal/ledger"
)

// EKCertIndex is the TCG NV index of the RSA 2048 EK certificate (TCG EK
// Credential Profile 2.0 §2.2.1.4).
const EKCertIndex = 0x01C00002

// DefaultTPMPaths are tried in order: the kernel's resource manager first
// (it flushes our transient objects if we die), then the raw device.
var DefaultTPMPaths = []string{"/dev/tpmrm0", "/dev/tpm0"}

// ReadEK creates the RSA endorsement key as a primary under the
// endorsement hierarchy from the TCG default template (go-tpm's
// RSAEKTemplate, the same key every time for the same TPM), hashes its
// public key (SHA-256 of the DER SubjectPublicKeyInfo) and checks whether
// an EK certificate is in NV. The transient object is flushed.
func ReadEK(ctx context.Context, tpm transport.TPM) (*ledger.TPM, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHEndorsement,
		InPublic:      tpm2.New2B(tpm2.RSAEKTemplate),
	}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("creating the RSA EK primary: %w", err)
	}
	defer tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tpm) //nolint:errcheck // best effort
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("decoding the EK public area: %w", err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("decoding the EK public key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding the EK public key: %w", err)
	}
	sum := sha256.Sum256(der)
	t := &ledger.TPM{EKSHA256: hex.EncodeToString(sum[:])}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Any failure here (usually TPM_RC_HANDLE: no such index) means no
	// certificate we could hand on; it is not an error.
	nv, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(EKCertIndex)}.Execute(tpm)
	t.EKCert = err == nil
	if t.EKCert {
		if der, err := readEKCert(ctx, tpm, nv); err != nil {
			t.EKCertError = err.Error()
		} else {
			sum := sha256.Sum256(der)
			t.EKCertDER, t.EKCertSHA256 = der, hex.EncodeToString(sum[:])
			if c, err := x509.ParseCertificate(der); err == nil {
				t.EKCertIssuer = c.Issuer.String()
			}
		}
	}
	return t, nil
}

// maxEKCert bounds the NV read: EK certificates are 1–2 KB.
const maxEKCert = 8 << 10

// nvChunk is the NV read size: the PC Client profile guarantees 512
// (TPM_PT_NV_BUFFER_MAX may be larger).
const nvChunk = 512

// readEKCert reads the certificate at EKCertIndex with the index's own
// (empty) authorization, as the TCG EK credential profile provisions it,
// and cuts NV padding after the DER SEQUENCE.
func readEKCert(ctx context.Context, tpm transport.TPM, nv *tpm2.NVReadPublicResponse) ([]byte, error) {
	pub, err := nv.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("decoding the EK certificate's NV public area: %w", err)
	}
	size := int(pub.DataSize)
	if size == 0 || size > maxEKCert {
		return nil, fmt.Errorf("EK certificate NV index holds %d bytes", size)
	}
	der := make([]byte, 0, size)
	for len(der) < size {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(nvChunk, size-len(der))
		rsp, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: pub.NVIndex, Name: nv.NVName, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: pub.NVIndex, Name: nv.NVName},
			Size:       uint16(n),
			Offset:     uint16(len(der)),
		}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("reading the EK certificate from NV at offset %d: %w", len(der), err)
		}
		if len(rsp.Data.Buffer) == 0 || len(rsp.Data.Buffer) > n {
			return nil, fmt.Errorf("reading the EK certificate from NV at offset %d: %d bytes for %d", len(der), len(rsp.Data.Buffer), n)
		}
		der = append(der, rsp.Data.Buffer...)
	}
	var raw asn1.RawValue
	if _, err := asn1.Unmarshal(der, &raw); err != nil {
		return nil, fmt.Errorf("the EK certificate in NV is not DER: %w", err)
	}
	return raw.FullBytes, nil
}

// DeviceTPM is the TPMReader for the machine's TPM: the first of Paths
// (default DefaultTPMPaths) that opens.
type DeviceTPM struct {
	Paths []string
	// Open opens one device; nil means the Linux character device.
	Open func(path string) (transport.TPMCloser, error)
}

// ReadEK implements TPMReader. No device at all gives ErrNoTPM.
func (d DeviceTPM) ReadEK(ctx context.Context) (*ledger.TPM, error) {
	paths := d.Paths
	if len(paths) == 0 {
		paths = DefaultTPMPaths
	}
	open := d.Open
	if open == nil {
		open = openTPMDevice
	}
	var errs []error
	for _, p := range paths {
		tpm, err := open(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("opening %s: %w", p, err))
			continue
		}
		t, err := ReadEK(ctx, tpm)
		tpm.Close()
		if err != nil {
			return nil, fmt.Errorf("reading the EK from %s: %w", p, err)
		}
		t.Device = p
		return t, nil
	}
	return nil, fmt.Errorf("%w: %w", ErrNoTPM, errors.Join(errs...))
}
