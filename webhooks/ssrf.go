package webhooks

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// blockedPrefixes are destinations a webhook may not reach besides what netip's predicates
// cover: shared address space (CGNAT), "this network", IETF protocol assignments, benchmarking,
// the documentation ranges, the reserved 240/4, NAT64 and the 6to4 relay anycast.
var blockedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("192.88.99.0/24"),
}

// blockedReason says why ip may not be a webhook destination ("" when it may).
func blockedReason(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return "an invalid address"
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "a link-local address (cloud metadata lives there)"
	case ip.IsPrivate():
		return "a private address"
	case ip.IsUnspecified():
		return "the unspecified address"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "a multicast address"
	}
	if ip.Is4() && ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return "the broadcast address"
	}
	for _, p := range blockedPrefixes {
		if p.Contains(ip) {
			return "a reserved address (" + p.String() + ")"
		}
	}
	return ""
}

// Resolver resolves host names; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// destinationError is a webhook URL the service refuses.
type destinationError struct{ msg string }

func (e *destinationError) Error() string { return e.msg }

// checkURL validates a webhook URL: http or https, a host, no user info, and, unless private
// destinations are allowed, every address the host resolves to public.
func (s *Service) checkURL(ctx context.Context, raw string) (*url.URL, error) {
	if len(raw) > 2048 {
		return nil, &destinationError{"url is longer than 2048 characters"}
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return nil, &destinationError{"url must be an absolute http or https URL"}
	}
	if u.User != nil {
		return nil, &destinationError{"url must not carry user info; use headers for credentials"}
	}
	if u.Fragment != "" {
		return nil, &destinationError{"url must not have a fragment"}
	}
	if s.o.AllowPrivate {
		return u, nil
	}
	host := u.Hostname()
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
			return nil, &destinationError{fmt.Sprintf("url host %s is a loopback name; webhooks may not target loopback, link-local or private networks", host)}
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		addrs, err = s.resolver.LookupNetIP(rctx, "ip", host)
		if err != nil || len(addrs) == 0 {
			return nil, &destinationError{fmt.Sprintf("url host %s does not resolve", host)}
		}
	}
	for _, a := range addrs {
		if why := blockedReason(a); why != "" {
			return nil, &destinationError{fmt.Sprintf("url host %s is %s (%s); webhooks may not target loopback, link-local or private networks", host, why, a.Unmap())}
		}
	}
	return u, nil
}

// dialControl refuses, at connect time, an address checkURL would refuse: this is what stops
// a host that resolved to a public address at creation from resolving to 127.0.0.1 (or
// 169.254.169.254) at delivery (DNS rebinding).
func dialControl(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("webhooks: dial %s: %w", address, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("webhooks: dial %s: %w", address, err)
	}
	if why := blockedReason(ip); why != "" {
		return fmt.Errorf("webhooks: refusing to connect to %s: %s", ip, why)
	}
	return nil
}

// newClient is the delivery client: no proxy, no redirects followed (a 3xx is a failed
// delivery), the timeout per attempt, and, unless private destinations are allowed, the dial
// check on every connection.
func newClient(timeout time.Duration, allowPrivate bool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		d.Control = dialControl
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         d.DialContext,
		MaxIdleConns:        100,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
