//go:build !linux

package chat

import "syscall"

// pollSupported: without epoll, every connection keeps one reader goroutine blocked in Read.
const pollSupported = false

type poller struct{}

func newPoller() (*poller, error) { return &poller{}, nil }

// add starts c's reader, which never parks: its frameConn has no raw socket to poll.
func (p *poller) add(c *conn) error {
	c.readable()
	return nil
}

func (p *poller) arm(*conn) error { return nil }
func (p *poller) remove(*conn)    {}
func (p *poller) stop()           {}

func tryRead(syscall.RawConn, []byte) (int, error) { return 0, errWouldBlock }
