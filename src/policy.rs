//! `(request, packet source, client, now) -> Decision`. Pure.
