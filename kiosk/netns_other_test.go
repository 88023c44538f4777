//go:build !linux

package kiosk

const envNSRole = "PROVSTICK_NETNS_ROLE"

func netnsRole(string) int { return 2 }
