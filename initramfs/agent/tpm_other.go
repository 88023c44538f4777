//go:build !linux

package agent

import (
	"errors"

	"github.com/google/go-tpm/tpm2/transport"
)

func openTPMDevice(path string) (transport.TPMCloser, error) {
	return nil, errors.New("TPM devices need Linux")
}
