//! Every scenario on every network: the exact (old, new) sequence and exact
//! 4-tuple of each socket's transitions, and nothing else from them.
use tcpstate_tests::scenario::{run_and_check, Network, Scenario};

macro_rules! scenario_tests {
    ($($name:ident: $network:ident, $scenario:ident;)*) => {
        $(
            #[test]
            fn $name() {
                run_and_check(Network::$network, Scenario::$scenario);
            }
        )*
    };
}

scenario_tests! {
    loopback_v4_client_closes_first: LoopbackV4, ClientClosesFirst;
    loopback_v4_server_closes_first: LoopbackV4, ServerClosesFirst;
    loopback_v4_both_close_at_once: LoopbackV4, BothCloseAtOnce;
    loopback_v4_reset_by_linger0: LoopbackV4, ResetByLinger0;
    loopback_v4_refused: LoopbackV4, Refused;
    loopback_v4_listen_then_close: LoopbackV4, ListenThenClose;

    loopback_v6_client_closes_first: LoopbackV6, ClientClosesFirst;
    loopback_v6_server_closes_first: LoopbackV6, ServerClosesFirst;
    loopback_v6_both_close_at_once: LoopbackV6, BothCloseAtOnce;
    loopback_v6_reset_by_linger0: LoopbackV6, ResetByLinger0;
    loopback_v6_refused: LoopbackV6, Refused;
    loopback_v6_listen_then_close: LoopbackV6, ListenThenClose;

    veth_v4_client_closes_first: VethV4, ClientClosesFirst;
    veth_v4_server_closes_first: VethV4, ServerClosesFirst;
    veth_v4_both_close_at_once: VethV4, BothCloseAtOnce;
    veth_v4_reset_by_linger0: VethV4, ResetByLinger0;
    veth_v4_refused: VethV4, Refused;
    veth_v4_listen_then_close: VethV4, ListenThenClose;

    veth_v6_client_closes_first: VethV6, ClientClosesFirst;
    veth_v6_server_closes_first: VethV6, ServerClosesFirst;
    veth_v6_both_close_at_once: VethV6, BothCloseAtOnce;
    veth_v6_reset_by_linger0: VethV6, ResetByLinger0;
    veth_v6_refused: VethV6, Refused;
    veth_v6_listen_then_close: VethV6, ListenThenClose;
}
