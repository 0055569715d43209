//! Guest-side binding for Spin's cron trigger: the `trigger-cron` plugin of
//! spinframework/spin-trigger-plugins (`spin plugins install trigger-cron`), package
//! `spin:cron@3.0.0`, world `spin-cron` (`wit/cron.wit` is the plugin's file).
//!
//! A component implements [`CronHandler`] and exports it with [`export_cron!`]. The same
//! component may also export an HTTP handler with `#[spin_sdk::http_service]`:
//!
//! ```ignore
//! struct Renewal;
//!
//! impl spin_cron::CronHandler for Renewal {
//!     async fn handle(timestamp_secs: u64) -> Result<(), String> {
//!         let _ = timestamp_secs;
//!         Ok(())
//!     }
//! }
//!
//! spin_cron::export_cron!(Renewal);
//! ```

#![warn(missing_docs)]

/// Bindings generated from `wit/cron.wit` (used by [`export_cron!`]; rarely needed directly).
#[doc(hidden)]
pub mod bindings {
    spin_sdk::wit_bindgen::generate!({
        path: "wit",
        world: "spin:cron/spin-cron",
        runtime_path: "::spin_sdk::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__export_spin_cron",
        default_bindings_module: "::spin_cron::bindings",
    });
}

/// The cron event's metadata as the host sends it.
pub use bindings::spin::cron::cron_types::Metadata;

/// A component's cron handler.
pub trait CronHandler {
    /// Runs one scheduled event. `timestamp_secs` is the event time in seconds since the epoch.
    /// An `Err` is reported by the host as the event's failure.
    fn handle(timestamp_secs: u64) -> impl Future<Output = Result<(), String>>;
}

/// Exports `$handler` (a type implementing [`CronHandler`]) as the component's
/// `handle-cron-event`.
#[macro_export]
macro_rules! export_cron {
    ($handler:ty) => {
        const _: () = {
            struct __SpinCronExport;

            impl $crate::bindings::Guest for __SpinCronExport {
                async fn handle_cron_event(
                    metadata: $crate::bindings::spin::cron::cron_types::Metadata,
                ) -> ::core::result::Result<(), $crate::bindings::spin::cron::cron_types::Error>
                {
                    <$handler as $crate::CronHandler>::handle(metadata.timestamp)
                        .await
                        .map_err($crate::bindings::spin::cron::cron_types::Error::Other)
                }
            }

    $crate::bindings::__export_spin_cron!(__SpinCronExport with_types_in $crate::bindings);
        };
    };
}
