//! What an etcd member's gRPC gateway answers (`/v3/cluster/member/list`,
//! `/v3/maintenance/status`), parsed for the EtcdCluster operator's
//! decisions.

use serde::Deserialize;

use crate::etcd_error::EtcdPlanError;

/// A member as `/v3/cluster/member/list` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedMember {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// What `/v3/maintenance/status` says about the member that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub id: u64,
    pub leader: u64,
    pub db_size: i64,
    pub version: String,
}

/// The gateway writes 64-bit integers as decimal strings.
fn num<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr + Default,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        I(i64),
    }
    match Option::<N>::deserialize(d)? {
        None => Ok(T::default()),
        Some(N::S(s)) => s.parse().map_err(|_| serde::de::Error::custom(format!("not a number: {s}"))),
        Some(N::I(i)) => i.to_string().parse().map_err(|_| serde::de::Error::custom("number out of range")),
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "num")]
    member_id: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMember {
    #[serde(rename = "ID", default, deserialize_with = "num")]
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
    #[serde(default)]
    is_learner: bool,
}

#[derive(Deserialize)]
struct RawList {
    #[serde(default)]
    members: Vec<RawMember>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawStatus {
    header: Option<Header>,
    #[serde(default, deserialize_with = "num")]
    leader: u64,
    #[serde(default, deserialize_with = "num")]
    db_size: i64,
    #[serde(default)]
    version: String,
}

/// Parses the gateway's `/v3/cluster/member/list` answer.
pub fn parse_member_list(body: &[u8]) -> Result<Vec<ListedMember>, EtcdPlanError> {
    let raw: RawList = serde_json::from_slice(body).map_err(|e| EtcdPlanError::Parse(e.to_string()))?;
    Ok(raw
        .members
        .into_iter()
        .map(|m| ListedMember {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_urls,
            client_urls: m.client_urls,
            is_learner: m.is_learner,
        })
        .collect())
}

/// Parses the gateway's `/v3/maintenance/status` answer.
pub fn parse_status(body: &[u8]) -> Result<MemberState, EtcdPlanError> {
    let raw: RawStatus = serde_json::from_slice(body).map_err(|e| EtcdPlanError::Parse(e.to_string()))?;
    Ok(MemberState {
        id: raw.header.map(|h| h.member_id).unwrap_or_default(),
        leader: raw.leader,
        db_size: raw.db_size,
        version: raw.version,
    })
}
