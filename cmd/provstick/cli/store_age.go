package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
	"filippo.io/age/armor"
	"github.com/spf13/cobra"
)

// ageFlags choose how exports are encrypted and imports decrypted
// (age, https://age-encryption.org/v1): X25519 recipients and identities,
// or a passphrase (scrypt).
type ageFlags struct {
	recipients     []string
	identityFile   string
	passphraseFile string
	workFactor     int
}

func (f *ageFlags) registerEncrypt(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.recipients, "recipient", "r", nil, "encrypt to this age public key (age1...); repeatable")
	fl.StringVar(&f.passphraseFile, "export-passphrase-file", "", "encrypt with the passphrase in this file (else $"+envExportPassphrase+", else asked on the terminal)")
	fl.IntVar(&f.workFactor, "scrypt-work-factor", 18, "log2 of the scrypt cost for a passphrase (age's default 18)")
}

func (f *ageFlags) registerDecrypt(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVarP(&f.identityFile, "identity", "i", "", "age identity file to decrypt an encrypted import")
	fl.StringVar(&f.passphraseFile, "export-passphrase-file", "", "passphrase of an encrypted import (else $"+envExportPassphrase+", else asked on the terminal)")
}

// encrypter returns what wraps the export writer.
func (f *ageFlags) encrypter(e *env) (func(io.Writer) (io.WriteCloser, error), error) {
	var rs []age.Recipient
	for _, r := range f.recipients {
		x, err := age.ParseX25519Recipient(strings.TrimSpace(r))
		if err != nil {
			return nil, fmt.Errorf("flag --recipient %q: %w", r, err)
		}
		rs = append(rs, x)
	}
	if len(rs) == 0 {
		if f.workFactor < 10 || f.workFactor > 22 {
			return nil, fmt.Errorf("flag --scrypt-work-factor: invalid value %d (want 10 to 22)", f.workFactor)
		}
		p, err := secretFrom(e, f.passphraseFile, envExportPassphrase, "export passphrase", true)
		if err != nil {
			return nil, err
		}
		sr, err := age.NewScryptRecipient(string(p))
		if err != nil {
			return nil, fmt.Errorf("export passphrase: %w", err)
		}
		sr.SetWorkFactor(f.workFactor)
		rs = append(rs, sr)
	}
	return func(w io.Writer) (io.WriteCloser, error) { return age.Encrypt(w, rs...) }, nil
}

const ageHeader = "age-encryption.org/v1\n"

// isAge reports whether data is an age file (binary or armored).
func isAge(data []byte) bool {
	return bytes.HasPrefix(data, []byte(ageHeader)) || bytes.HasPrefix(bytes.TrimSpace(data), []byte(armor.Header))
}

// decrypt opens an age file with the identity file or the passphrase.
func (f *ageFlags) decrypt(e *env, data []byte) ([]byte, error) {
	var ids []age.Identity
	if f.identityFile != "" {
		fh, err := os.Open(f.identityFile)
		if err != nil {
			return nil, fmt.Errorf("reading the identity file: %w", err)
		}
		defer fh.Close()
		if ids, err = age.ParseIdentities(bufio.NewReader(fh)); err != nil {
			return nil, fmt.Errorf("identity file %s: %w", f.identityFile, err)
		}
	} else {
		p, err := secretFrom(e, f.passphraseFile, envExportPassphrase, "export passphrase", false)
		if err != nil {
			return nil, err
		}
		si, err := age.NewScryptIdentity(string(p))
		if err != nil {
			return nil, fmt.Errorf("export passphrase: %w", err)
		}
		ids = append(ids, si)
	}
	var r io.Reader = bytes.NewReader(data)
	if !bytes.HasPrefix(data, []byte(ageHeader)) {
		r = armor.NewReader(r)
	}
	dr, err := age.Decrypt(r, ids...)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, errors.New("wrong export passphrase or identity")
		}
		return nil, err
	}
	return io.ReadAll(io.LimitReader(dr, 256<<20))
}
