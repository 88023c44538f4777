package amtsim

import (
	"context"
	"encoding/binary"
	"log/slog"
	"slices"

	"github.com/provstick/provstick/initramfs/heci/amthi"
	"github.com/provstick/provstick/initramfs/heci/mkhi"
)

// amthi answers one AMTHI request from the device model.
func (s *MEServer) amthi(req []byte) []byte {
	h, body, err := amthi.ParseRequest(req)
	if err != nil {
		if len(req) < amthi.HeaderLen {
			// Nothing to answer to; real firmware behaviour is not known.
			// The simulator answers an INVALID_MESSAGE_LENGTH for command 0.
			s.log.Debug("amtsim: short AMTHI request", "bytes", len(req))
			return amthi.MarshalResponse(0, amthi.StatusInvalidMessageLength, nil)
		}
		s.log.Debug("amtsim: bad AMTHI request", "command", h.Command, "err", err)
		return amthi.MarshalResponse(h.Command, amthi.StatusInvalidMessageLength, nil)
	}
	st, resp := s.answer(h.Command, body)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("amtsim: AMTHI", "command", h.Command, "status", st.Name())
	}
	return amthi.MarshalResponse(h.Command, st, resp)
}

// answer computes the status and response body of one command.
func (s *MEServer) answer(cmd amthi.Command, body []byte) (amthi.Status, amthi.Response) {
	bad := func(err error) (amthi.Status, amthi.Response) {
		s.log.Debug("amtsim: bad request body", "command", cmd, "err", err)
		return amthi.StatusInvalidMessageLength, nil
	}
	if s.notReady() {
		return amthi.StatusNotReady, nil
	}
	st := s.dev.shallow()
	if slices.Contains(st.Unsupported, cmd) {
		return amthi.StatusUnsupported, nil
	}
	switch cmd {
	case amthi.CmdGetCodeVersions:
		if err := amthi.DecodeEmptyBody(cmd, body); err != nil {
			return bad(err)
		}
		return amthi.StatusSuccess, &amthi.GetCodeVersionsResponse{BIOS: st.BIOSVersion, Versions: []amthi.CodeVersion{
			{Description: "AMT", Version: st.AMTVersion},
			{Description: "Flash", Version: st.AMTVersion},
			{Description: "Build Number", Version: st.BuildNumber},
			{Description: "Sku", Version: st.SKU},
		}}
	case amthi.CmdGetProvisioningMode:
		if err := amthi.DecodeEmptyBody(cmd, body); err != nil {
			return bad(err)
		}
		return amthi.StatusSuccess, &amthi.GetProvisioningModeResponse{Mode: st.ProvisioningMode}
	case amthi.CmdUnprovision:
		var r amthi.Unprovision
		if err := r.DecodeBody(cmd, body); err != nil {
			return bad(err)
		}
		if st.ProvisioningState == amthi.StatePre {
			return amthi.StatusInvalidProvisioningState, nil
		}
		s.dev.Update(func(st *State) { st.unprovision() })
		s.log.Info("amtsim: unprovisioned over HECI")
		return amthi.StatusSuccess, &amthi.UnprovisionResponse{}
	case amthi.CmdGetProvisioningState:
		if err := amthi.DecodeEmptyBody(cmd, body); err != nil {
			return bad(err)
		}
		return amthi.StatusSuccess, &amthi.GetProvisioningStateResponse{State: st.ProvisioningState}
	case amthi.CmdGetSecurityParameters:
		if err := amthi.DecodeEmptyBody(cmd, body); err != nil {
			return bad(err)
		}
		return amthi.StatusSuccess, &amthi.GetSecurityParametersResponse{
			EnterpriseMode:          st.ProvisioningMode == amthi.ModeEnterprise,
			TLSEnabled:              st.ProvisioningState == amthi.StatePost,
			HWCryptoEnabled:         true,
			ProvisioningState:       st.ProvisioningState,
			NetworkInterfaceEnabled: st.Wired.Enabled,
			FWUpdateEnabled:         true,
			LinkIsUp:                st.Wired.LinkUp,
		}
	case amthi.CmdGetMACAddresses:
		if err := amthi.DecodeEmptyBody(cmd, body); err != nil {
			return bad(err)
		}
		return amthi.StatusSuccess, &amthi.GetMACAddressesResponse{Dedicated: st.Wired.MAC, Host: st.HostMAC}
	case amthi.CmdStartConfiguration:
		if err := amthi.DecodeEmptyBody(cmd, body); err != nil {
			return bad(err)
		}
		if st.ProvisioningState == amthi.StatePost {
			return amthi.StatusInvalidProvisioningState, nil
		}
		s.dev.Update(func(st *State) { st.ProvisioningState = amthi.StateIn })
		return amthi.StatusSuccess, nil
	case amthi.CmdStopConfiguration:
		if err := amthi.DecodeEmptyBody(cmd, body); err != nil {
			return bad(err)
		}
		if st.ProvisioningState != amthi.StateIn {
			return amthi.StatusInvalidProvisioningState, nil
		}
		s.dev.Update(func(st *State) { st.ProvisioningState = amthi.StatePre })
		return amthi.StatusSuccess, nil
	case amthi.CmdSetProvisioningServerOTP:
		var r amthi.SetProvisioningServerOTP
		if err := r.DecodeBody(cmd, body); err != nil {
			return bad(err)
		}
		if st.ProvisioningState == amthi.StatePost {
			return amthi.StatusInvalidProvisioningState, nil
		}
		s.dev.Update(func(st *State) { st.OTP = NewSecret(r.OTP.Reveal()) })
		return amthi.StatusSuccess, nil
	case amthi.CmdGetProvisioningTLSMode:
		if err := amthi.DecodeEmptyBody(cmd, body); err != nil {
			return bad(err)
		}
		return amthi.StatusSuccess, &amthi.GetProvisioningTLSModeResponse{Mode: st.TLSMode}
	case amthi.CmdEnumerateHashHandles:
		if err := amthi.DecodeEmptyBody(cmd, body); err != nil {
			return bad(err)
		}
		r := &amthi.EnumerateHashHandlesResponse{Handles: []uint32{}}
		for _, h := range st.Hashes {
			r.Handles = append(r.Handles, h.Handle)
		}
		return amthi.StatusSuccess, r
	case amthi.CmdGetCertHashEntry:
		var r amthi.GetCertHashEntry
		if err := r.DecodeBody(cmd, body); err != nil {
			return bad(err)
		}
		for _, h := range st.Hashes {
			if h.Handle == r.Handle {
				resp := &amthi.GetCertHashEntryResponse{IsDefault: h.Default, IsActive: h.Active, Algorithm: h.Algorithm, Name: h.Name}
				copy(resp.Hash[:], h.Hash)
				return amthi.StatusSuccess, resp
			}
		}
		return amthi.StatusInvalidHandle, nil
	case amthi.CmdSetDNSSuffix:
		var r amthi.SetDNSSuffix
		if err := r.DecodeBody(cmd, body); err != nil {
			return bad(err)
		}
		if st.ProvisioningState == amthi.StatePost {
			return amthi.StatusInvalidProvisioningState, nil
		}
		s.dev.Update(func(st *State) { st.DNSSuffix = r.Suffix })
		return amthi.StatusSuccess, nil
	case amthi.CmdGetZeroTouchEnabled:
		if err := amthi.DecodeEmptyBody(cmd, body); err != nil {
			return bad(err)
		}
		return amthi.StatusSuccess, &amthi.GetZeroTouchEnabledResponse{Enabled: st.ZeroTouch}
	case amthi.CmdGetPKIFQDNSuffix:
		if err := amthi.DecodeEmptyBody(cmd, body); err != nil {
			return bad(err)
		}
		return amthi.StatusSuccess, &amthi.GetPKIFQDNSuffixResponse{Suffix: st.PKISuffix}
	case amthi.CmdGetRemoteAccessConnectionStatus:
		if err := amthi.DecodeEmptyBody(cmd, body); err != nil {
			return bad(err)
		}
		// Not connected to any MPS: the simulator has no CIRA.
		return amthi.StatusSuccess, &amthi.GetRemoteAccessConnectionStatusResponse{}
	case amthi.CmdGetLANInterfaceSettings:
		var r amthi.GetLANInterfaceSettings
		if err := r.DecodeBody(cmd, body); err != nil {
			return bad(err)
		}
		var lan *LAN
		switch r.Index {
		case amthi.InterfaceWired:
			lan = &st.Wired
		case amthi.InterfaceWireless:
			lan = st.Wireless
		default:
			return amthi.StatusInvalidParameter, nil
		}
		if lan == nil {
			// What firmware without wireless answers is not documented;
			// the simulator answers NOT_FOUND.
			return amthi.StatusNotFound, nil
		}
		return amthi.StatusSuccess, &amthi.GetLANInterfaceSettingsResponse{
			Enabled: lan.Enabled, IPv4: binary.BigEndian.Uint32(lan.IPv4[:]), DHCPEnabled: lan.DHCPEnabled,
			DHCPMode: lan.DHCPMode, LinkUp: lan.LinkUp, MAC: lan.MAC,
		}
	case amthi.CmdGetUUID:
		if err := amthi.DecodeEmptyBody(cmd, body); err != nil {
			return bad(err)
		}
		return amthi.StatusSuccess, &amthi.GetUUIDResponse{UUID: st.UUID}
	case amthi.CmdGetLocalSystemAccount:
		var r amthi.GetLocalSystemAccount
		if err := r.DecodeBody(cmd, body); err != nil {
			return bad(err)
		}
		return amthi.StatusSuccess, &amthi.GetLocalSystemAccountResponse{User: st.LocalUser, Password: amthi.NewSecret(st.LocalPass.Reveal())}
	case amthi.CmdGetControlMode:
		if err := amthi.DecodeEmptyBody(cmd, body); err != nil {
			return bad(err)
		}
		return amthi.StatusSuccess, &amthi.GetControlModeResponse{Mode: st.ControlMode}
	}
	// Unknown command: real firmware's answer is not documented
	// (specs/heci.md §3); the simulator answers UNSUPPORTED.
	return amthi.StatusUnsupported, nil
}

// mkhi answers one MKHI request: only the firmware version is known.
func (s *MEServer) mkhi(req []byte) []byte {
	if err := mkhi.ParseRequest(req); err != nil {
		s.log.Debug("amtsim: unsupported MKHI request", "bytes", len(req))
		// Same header back with the response bit and a non-zero result;
		// the real result codes are not in specs/.
		out := []byte{0, 0x80, 0, 1}
		if len(req) >= 2 {
			out[0], out[1] = req[0], req[1]|0x80
		}
		return out
	}
	st := s.dev.shallow()
	r := &mkhi.GetFWVersionResponse{Blocks: []mkhi.Version{st.FW, st.FW}}
	return r.Marshal()
}
