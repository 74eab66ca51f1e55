# Config writers for bench/run.sh (sourced by it, not run on its own): each writes one
# config file under $TMP from the settings run.sh has set (MODE, TMP, NOFILE, CONNS,
# PROXY_PORT, BACKEND1, BACKEND2). MODE=tcp: every proxy relays bytes; MODE=http: every
# proxy balances each request and keeps its connections to the backends for reuse.

# shellcheck shell=bash

write_backend_conf() { # PORT
	local port=$1 dir=$TMP/backend-$1
	mkdir -p "$dir"
	cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $((CONNS + 1000)); }
http {
    access_log off;
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 600s;
    keepalive_requests 10000000;
    client_header_timeout 600s;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port backlog=4096;
        root $TMP/www;
        location = / { return 200 "ok"; }
        location = /big.bin { }
    }
}
EOF
}

write_lbctl_conf() { # NAME WORKERS
	local dir=$TMP/$1
	mkdir -p "$dir"
	cat >"$dir/lbctl.toml" <<EOF
[master]
workers = $2
pid_file = "$dir/lbctl.pid"
control_socket = "$dir/lbctl.sock"
log_file = "$dir/lbctl.log"
drain_timeout = "5s"

[[listen]]
name = "bench"
bind = "127.0.0.1:$PROXY_PORT"
mode = "$MODE"
balance = "round_robin"
servers = [ { addr = "127.0.0.1:$BACKEND1" }, { addr = "127.0.0.1:$BACKEND2" } ]
EOF
	if [[ $MODE == tcp && -n ${DATAPLANE:-} ]]; then
		echo "dataplane = \"$DATAPLANE\"" >>"$dir/lbctl.toml"
	fi
	if [[ $MODE == tcp && ${DATAPLANE:-} == sockmap && -n ${SOCKMAP_SNDBUF:-} ]]; then
		echo "sockmap_sndbuf = \"$SOCKMAP_SNDBUF\"" >>"$dir/lbctl.toml"
	fi
	if [[ ${DEFER:-0} == 1 ]]; then
		echo "defer_accept = true" >>"$dir/lbctl.toml"
	fi
	if [[ ${SMART:-0} == 1 ]]; then
		echo "smart_connect = true" >>"$dir/lbctl.toml"
	fi
	if [[ $MODE == http ]]; then
		cat >>"$dir/lbctl.toml" <<EOF
pool = { max_idle = 64, idle_timeout = "30s" }
timeouts = { idle = "60s" }
EOF
	fi
}

write_haproxy_conf() {
	local HAPROXY_BIND_OPTS="" HAPROXY_LISTEN_OPTS=""
	if [[ ${DEFER:-0} == 1 ]]; then
		HAPROXY_BIND_OPTS=" defer-accept"
		HAPROXY_LISTEN_OPTS=$'\n    option tcp-smart-connect'
	elif [[ ${SMART:-0} == 1 ]]; then
		HAPROXY_LISTEN_OPTS=$'\n    option tcp-smart-connect'
	fi
	mkdir -p "$TMP/haproxy"
	cat >"$TMP/haproxy/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $((CONNS + 1000))
    ulimit-n $NOFILE

defaults
    mode $MODE
    maxconn $((CONNS + 1000))
    timeout connect 3s
    timeout client 10m
    timeout server 10m
EOF
	if [[ $MODE == http ]]; then
		# Each request is balanced on its own; idle server connections are shared.
		cat >>"$TMP/haproxy/haproxy.cfg" <<EOF
    option http-keep-alive
    http-reuse safe
    timeout http-keep-alive 60s
EOF
	fi
	cat >>"$TMP/haproxy/haproxy.cfg" <<EOF

listen bench
    bind 127.0.0.1:$PROXY_PORT${HAPROXY_BIND_OPTS:-}
    balance roundrobin${HAPROXY_LISTEN_OPTS:-}
    server b1 127.0.0.1:$BACKEND1
    server b2 127.0.0.1:$BACKEND2
EOF
}

write_nginx_conf() { # nginx stream (MODE=tcp) or nginx http proxy_pass (MODE=http)
	if [[ $MODE == http ]]; then write_nginx_http_conf; else write_nginx_stream_conf; fi
}

write_nginx_stream_conf() {
	local dir=$TMP/nginx-stream
	mkdir -p "$dir"
	cat >"$dir/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $((2 * CONNS + 1000)); }
stream {
    upstream backends {
        server 127.0.0.1:$BACKEND1;
        server 127.0.0.1:$BACKEND2;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        proxy_pass backends;
        proxy_connect_timeout 3s;
        proxy_timeout 10m;
    }
}
EOF
}

write_nginx_http_conf() {
	local dir=$TMP/nginx-http
	mkdir -p "$dir"
	# keepalive_requests: nginx closes a kept connection after 1000 requests by default,
	# on either side; HAProxy and lbctl don't. proxy_max_temp_file_size 0: a large
	# response streams through the buffers instead of a temp file (the big test).
	cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $((2 * CONNS + 1000)); }
http {
    access_log off;
    keepalive_timeout 60s;
    keepalive_requests 10000000;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    upstream backends {
        server 127.0.0.1:$BACKEND1;
        server 127.0.0.1:$BACKEND2;
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 30s;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT backlog=4096;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 3s;
            proxy_read_timeout 10m;
            proxy_max_temp_file_size 0;
        }
    }
}
EOF
}
