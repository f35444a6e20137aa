//! Users and groups as the options name them (`uid`, `gid`, `chown-socket`): a name or a
//! number. One resolver for the daemon, which switches to them, and for the nginx module,
//! which checks that its workers can reach the socket.

/// A user by name or number.
pub fn user_id(user: &str) -> Result<u32, String> {
    if let Ok(id) = user.parse::<u32>() {
        return Ok(id);
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(found)) => Ok(found.uid.as_raw()),
        Ok(None) => Err(format!("no user \"{user}\"")),
        Err(err) => Err(format!("cannot look up user \"{user}\": {err}")),
    }
}

/// A group by name or number.
pub fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(id) = group.parse::<u32>() {
        return Ok(id);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid.as_raw()),
        Ok(None) => Err(format!("no group \"{group}\"")),
        Err(err) => Err(format!("cannot look up group \"{group}\": {err}")),
    }
}

/// `chown-socket = user[:group]`; either part may be left empty (`:www-data` changes the
/// group only).
pub fn split_owner(spec: &str) -> (Option<&str>, Option<&str>) {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    (
        Some(user).filter(|u| !u.is_empty()),
        group.filter(|g| !g.is_empty()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(user_id("root"), Ok(0));
        assert_eq!(user_id("1234"), Ok(1234));
        assert_eq!(group_id("root"), Ok(0));
        assert_eq!(
            user_id("no-such-user-here"),
            Err("no user \"no-such-user-here\"".into())
        );
        assert_eq!(
            group_id("no-such-group-here"),
            Err("no group \"no-such-group-here\"".into())
        );
    }

    #[test]
    fn either_part_of_an_owner_may_be_empty() {
        assert_eq!(split_owner("www-data"), (Some("www-data"), None));
        assert_eq!(split_owner("www-data:adm"), (Some("www-data"), Some("adm")));
        assert_eq!(split_owner(":www-data"), (None, Some("www-data")));
        assert_eq!(split_owner("www-data:"), (Some("www-data"), None));
    }
}
