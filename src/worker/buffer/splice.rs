//! Owns the splice(2) path of a [`Pipe`]: bulk bytes go socket → kernel
//! pipe → socket without a copy through user space. SPLICE_F_MORE is set only
//! while the source has more, a burst that ends corked is pushed at once, and
//! a direction goes back to read/write after a small burst or when urgent
//! data is pending (splice cannot step over the urgent mark).

use super::{BUF_SIZE, Flow, PIPE_CAP, Pipe, Pool, Ready, Shutdown};
use nix::fcntl::{SpliceFFlags, splice};
use std::io;
use std::os::fd::AsFd;

impl Pipe {
    /// Like [`Pipe::pump`], with splice(2) through a kernel pipe: bytes go
    /// from `src` to `dst` without a copy through user space.
    pub fn pump_splice<S: AsFd + Shutdown, D: AsFd + Shutdown>(
        &mut self,
        src: &S,
        src_ready: &mut Ready,
        dst: &mut D,
        dst_ready: &mut Ready,
        pool: &mut Pool,
        budget: &mut usize,
    ) -> io::Result<Flow> {
        if self.spliced.is_none() {
            self.spliced = Some(pool.take_pipe()?);
        }
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        let mut flow = Flow::Idle;
        let mut moved_in = 0;
        let mut corked = false;
        while let Some((pr, pw)) = &self.spliced {
            if *budget == 0 {
                break;
            }
            let mut progress = false;
            if self.in_pipe > 0 && dst_ready.write {
                let want = self.in_pipe;
                // More is on its way while the source is readable: let the
                // kernel fill whole segments (SPLICE_F_MORE, as MSG_MORE).
                let more = src_ready.read && !self.eof && !src_ready.urgent;
                let out_flags = if more {
                    flags | SpliceFFlags::SPLICE_F_MORE
                } else {
                    flags
                };
                corked = more;
                match splice(pr, None, dst.as_fd(), None, want, out_flags) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.in_pipe -= n;
                        self.bytes += n as u64;
                        *budget = budget.saturating_sub(n);
                        progress = true;
                        if n < want {
                            dst_ready.write = false;
                        }
                    }
                    Err(nix::errno::Errno::EAGAIN) => dst_ready.write = false,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            // splice(2) cannot step over an urgent byte (it stops at the
            // mark, for good): with one pending the direction goes back to
            // recv(2), once the pipe is drained.
            if !self.eof && src_ready.read && !src_ready.urgent && self.in_pipe < PIPE_CAP {
                let want = PIPE_CAP - self.in_pipe;
                match splice(src.as_fd(), None, pw, None, want, flags) {
                    Ok(0) => {
                        // 0 is the EOF, or an urgent mark with the FIN
                        // queued behind it (its EPOLLPRI may not be
                        // harvested yet): let recv(2), which steps over
                        // the mark, tell the two apart.
                        src_ready.urgent = true;
                    }
                    Ok(n) => {
                        self.in_pipe += n;
                        moved_in += n;
                        progress = true;
                    }
                    // With bytes in the pipe, EAGAIN may mean the pipe is
                    // full rather than the socket empty: keep the flag and
                    // retry once the pipe drained.
                    Err(nix::errno::Errno::EAGAIN) if self.in_pipe > 0 => {}
                    Err(nix::errno::Errno::EAGAIN) => src_ready.read = false,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if progress {
                flow = Flow::Moved;
            } else {
                break;
            }
        }
        if corked && self.in_pipe == 0 && (!src_ready.read || self.eof) {
            // The last bytes went out with SPLICE_F_MORE and nothing
            // followed: a short tail would wait for a probe timer (~200 ms)
            // with nothing in flight. Setting TCP_NODELAY pushes it now.
            let _ = socket2::SockRef::from(&*dst).set_tcp_nodelay(true);
        }
        if src_ready.urgent || (self.in_pipe == 0 && !src_ready.read && moved_in < BUF_SIZE) {
            // The burst is over and it was small: the next messages go by
            // read/write again, cheaper than splice for small ones (a read
            // that fills the buffer makes the direction bulk again).
            self.bulk = false;
        }
        self.finish_step(dst, pool);
        Ok(flow)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Pipe, Pool, Ready};
    use std::io::{Read, Write};

    /// A connected loopback pair, non-blocking, with TCP_NODELAY as the
    /// worker sets it.
    fn tcp_pair() -> (mio::net::TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        a.set_nodelay(true).expect("nodelay");
        a.set_nonblocking(true).expect("nonblocking");
        b.set_nonblocking(true).expect("nonblocking");
        (mio::net::TcpStream::from_std(a), b)
    }

    #[test]
    fn a_small_message_spliced_after_a_bulk_one_is_sent_at_once() {
        // src_in -> src (read by the pipe) ; dst (written by the pipe) -> dst_out
        let (src, mut src_in) = tcp_pair();
        let (mut dst, mut dst_out) = tcp_pair();
        let mut pool = Pool::new();
        let mut p = Pipe {
            bulk: true,
            ..Pipe::default()
        };
        let ready = Ready {
            read: true,
            write: true,
            ..Ready::default()
        };
        let (mut sr, mut dr) = (ready, ready);
        src_in.write_all(b"ping").expect("write");
        p.pump_splice(
            &src,
            &mut sr,
            &mut dst,
            &mut dr,
            &mut pool,
            &mut usize::MAX.clone(),
        )
        .expect("splice");
        assert_eq!(p.bytes, 4, "the message went through the pipe");
        // Loopback delivers during the sending call: the bytes are there now
        // unless the kernel held them back (MSG_MORE corks a short tail until
        // a probe timer, ~200 ms later, with nothing else in flight).
        let mut got = [0u8; 16];
        let n = dst_out
            .read(&mut got)
            .expect("the spliced bytes were sent at once, not held back");
        assert_eq!(&got[..n], b"ping");
        assert!(
            !p.splicing(),
            "after a small burst the direction is back on read/write"
        );
        assert!(p.spliced.is_none(), "the pipe went back to the pool");
    }
}
