package chat

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
)

// frameConn is the socket under gorilla/websocket's reader. It never hands gorilla a byte past
// the end of the frame being read, so whenever gorilla asks for the next frame's header its
// read buffer is empty: what the client sent since is in frameConn's own buffer, which it
// borrows from a pool while bytes wait in it, or still in the kernel. At such a boundary
// between messages it can let the reader goroutine go instead of blocking: when its buffer is
// empty and the socket has nothing (a non-blocking read says EAGAIN) it hands gorilla
// idleFrame, an empty binary message of its own, which conn.readMessage recognises and turns
// into "idle, wait for the poller". That is what lets an idle connection hold no goroutine
// and no read buffer while gorilla keeps doing the framing, control frames and close handshake.
//
// Only the connection's reader touches the parse state; successive reader goroutines are
// ordered by conn.rmu.
type frameConn struct {
	net.Conn
	raw syscall.RawConn // for non-blocking reads; nil: never idle (blocking reads only)

	buf  *[]byte // read from the socket, not yet handed to gorilla; nil when empty
	r, w int     // buf[r:w] is what waits

	hdr    [14]byte // the current frame's header as read so far
	hdrN   int      // header bytes read
	hdrLen int      // the header's full length; 0 until its first two bytes are read
	left   uint64   // payload bytes of the current frame not yet handed out
	inMsg  bool     // a fragmented message is open: its final frame is still to come

	idleOK bool // at a message boundary with nothing to read, hand out idleFrame
	idle   bool // idleFrame was handed out and not yet taken
}

// idleFrame is a final, masked, empty binary frame: what gorilla reads when the socket is idle.
var idleFrame = []byte{0x82, 0x80, 0, 0, 0, 0}

// errWouldBlock is what tryRead reports when the socket has nothing to read.
var errWouldBlock = errors.New("would block")

// readBufs lends frameConn its buffer only while bytes wait in it.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

func newFrameConn(nc net.Conn) *frameConn {
	f := &frameConn{Conn: nc}
	if sc, ok := nc.(syscall.Conn); ok && pollSupported {
		if raw, err := sc.SyscallConn(); err == nil {
			f.raw = raw
		}
	}
	return f
}

func (f *frameConn) Read(p []byte) (int, error) {
	room := f.room(len(p))
	if f.buf == nil {
		boundary := f.hdrLen == 0 && f.hdrN == 0
		if boundary && f.idleOK && f.raw != nil && !f.inMsg && len(p) >= len(idleFrame) {
			f.buf = readBufs.Get().(*[]byte)
			n, err := tryRead(f.raw, *f.buf)
			if err == errWouldBlock {
				f.release()
				f.idle = true
				return copy(p, idleFrame), nil
			}
			if n == 0 {
				f.release()
				return 0, err
			}
			f.r, f.w = 0, n
		} else if boundary || room >= 4096 {
			// Waiting for the next frame (which may take long where the socket cannot be
			// polled: hold no buffer meanwhile) or a big payload: straight into gorilla's
			// slice, as far as the frame goes.
			n, err := f.Conn.Read(p[:room])
			f.observe(p[:n])
			return n, err
		} else {
			f.buf = readBufs.Get().(*[]byte)
			n, err := f.Conn.Read(*f.buf)
			if n == 0 {
				f.release()
				return 0, err
			}
			f.r, f.w = 0, n
		}
	}
	n := copy(p[:room], (*f.buf)[f.r:f.w])
	f.r += n
	if f.r == f.w {
		f.release()
	}
	f.observe(p[:n])
	return n, nil
}

func (f *frameConn) release() {
	readBufs.Put(f.buf)
	f.buf, f.r, f.w = nil, 0, 0
}

// takeIdle reports whether the message gorilla just returned was idleFrame.
func (f *frameConn) takeIdle() bool {
	idle := f.idle
	f.idle = false
	return idle
}

// room is how much of n bytes may be read without passing the end of the current frame.
func (f *frameConn) room(n int) int {
	if f.hdrLen == 0 {
		return min(n, 2-f.hdrN)
	}
	r := uint64(f.hdrLen - f.hdrN) // the rest of the header
	if r == 0 || f.hdr[1]&0x7f < 126 {
		r += f.left // the payload's length is known
	}
	return int(min(uint64(n), r))
}

// observe follows the frames in b, bytes just read (never past the current frame's end).
func (f *frameConn) observe(b []byte) {
	for len(b) > 0 {
		if f.hdrLen == 0 || f.hdrN < f.hdrLen {
			want := f.hdrLen
			if want == 0 {
				want = 2
			}
			k := copy(f.hdr[f.hdrN:want], b)
			f.hdrN += k
			b = b[k:]
			if f.hdrLen == 0 && f.hdrN == 2 {
				f.hdrLen = 2
				switch l := f.hdr[1] & 0x7f; l {
				case 126:
					f.hdrLen += 2
				case 127:
					f.hdrLen += 8
				default:
					f.left = uint64(l)
				}
				if f.hdr[1]&0x80 != 0 {
					f.hdrLen += 4 // masking key
				}
			}
			if f.hdrLen != 0 && f.hdrN == f.hdrLen {
				switch f.hdr[1] & 0x7f {
				case 126:
					f.left = uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
				case 127:
					f.left = binary.BigEndian.Uint64(f.hdr[2:10])
				}
				if f.hdr[0]&0x0f < 8 { // a data frame: FIN ends the message
					f.inMsg = f.hdr[0]&0x80 == 0
				}
				if f.left == 0 {
					f.next()
				}
			}
			continue
		}
		k := min(uint64(len(b)), f.left)
		f.left -= k
		b = b[k:]
		if f.left == 0 {
			f.next()
		}
	}
}

func (f *frameConn) next() { f.hdrN, f.hdrLen, f.left = 0, 0, 0 }

// hijacker hands gorilla's Upgrade the hijacked socket wrapped in a frameConn.
type hijacker struct {
	http.ResponseWriter
	fc *frameConn
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.fc = newFrameConn(nc)
	return h.fc, brw, nil
}

func (h *hijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }
