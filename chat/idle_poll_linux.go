package chat

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
)

// pollSupported: idle connections wait in the hub's epoll instance, without a goroutine.
const pollSupported = true

// poller is one epoll instance per hub, watching every idle connection's socket. Each
// registration is one-shot: a readable socket starts one reader goroutine (conn.readable),
// which reads what came, and re-arms the registration (conn.park) once the socket is empty.
type poller struct {
	epfd   int
	wakeR  *os.File // closing wakeW makes the loop return
	wakeW  *os.File
	mu     sync.RWMutex     // guards what follows; read-held around epoll_ctl so epfd stays open
	closed bool             // epfd is closed
	conns  map[uint64]*conn // by registration id
	nextID uint64
	done   chan struct{}
}

const wakeID = 0 // the registration id of the wake pipe

func newPoller() (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	setEventID(&ev, wakeID)
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, int(r.Fd()), &ev); err != nil {
		syscall.Close(epfd)
		r.Close()
		w.Close()
		return nil, err
	}
	p := &poller{epfd: epfd, wakeR: r, wakeW: w, conns: map[uint64]*conn{}, done: make(chan struct{})}
	go p.loop()
	return p, nil
}

func setEventID(ev *syscall.EpollEvent, id uint64) {
	ev.Fd, ev.Pad = int32(uint32(id)), int32(uint32(id>>32))
}

func eventID(ev *syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

func (p *poller) loop() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			return
		}
		for i := range n {
			id := eventID(&events[i])
			if id == wakeID {
				return
			}
			p.mu.RLock()
			c := p.conns[id]
			p.mu.RUnlock()
			if c != nil {
				c.readable()
			}
		}
	}
}

// add watches c's socket; the first readable event starts its reader.
func (p *poller) add(c *conn) error {
	p.mu.Lock()
	p.nextID++
	c.pollID = p.nextID
	p.conns[c.pollID] = c
	p.mu.Unlock()
	return p.ctl(c, syscall.EPOLL_CTL_ADD)
}

// arm re-arms c's one-shot registration after its reader found the socket empty.
func (p *poller) arm(c *conn) error { return p.ctl(c, syscall.EPOLL_CTL_MOD) }

// remove forgets c. Its epoll registration went with the socket, closed before.
func (p *poller) remove(c *conn) {
	p.mu.Lock()
	delete(p.conns, c.pollID)
	p.mu.Unlock()
}

func (p *poller) ctl(c *conn, op int) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return errors.New("chat: poller stopped")
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT}
	setEventID(&ev, c.pollID)
	var err error
	// Control holds the socket open, so its descriptor cannot be another's meanwhile.
	if cerr := c.fc.raw.Control(func(fd uintptr) {
		err = syscall.EpollCtl(p.epfd, op, int(fd), &ev)
	}); cerr != nil {
		return cerr
	}
	return err
}

// stop ends the loop and closes the epoll instance.
func (p *poller) stop() {
	p.wakeW.Close()
	<-p.done
	p.mu.Lock()
	p.closed = true
	syscall.Close(p.epfd)
	p.mu.Unlock()
	p.wakeR.Close()
}

// tryRead reads once without waiting: errWouldBlock when the socket has nothing.
func tryRead(raw syscall.RawConn, p []byte) (int, error) {
	var (
		n    int
		serr error
	)
	err := raw.Read(func(fd uintptr) bool {
		for {
			n, serr = syscall.Read(int(fd), p)
			if serr != syscall.EINTR {
				return true
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case serr == syscall.EAGAIN:
		return 0, errWouldBlock
	case serr != nil:
		return 0, &os.SyscallError{Syscall: "read", Err: serr}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}
