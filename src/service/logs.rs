//! Reading a process's logs: the last lines of each stream, and the files the live stream follows.

use super::*;

impl Service {
    pub fn logs(&self, target: &Target, lines: usize) -> Result<LogsResponse, ServiceError> {
        let id = self.resolve_one(target)?;
        let spec = self
            .store
            .get(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no process {id}")))?;
        let lines = lines.min(MAX_LOG_LINES);
        let out_log = self.home.out_log(&spec.name, id);
        let err_log = self.home.err_log(&spec.name, id);
        let read = |p: &Path| {
            supervise::logs::tail_lines(p, lines).map_err(|source| ServiceError::File {
                what: "cannot read",
                path: p.to_path_buf(),
                source,
            })
        };
        Ok(LogsResponse {
            id,
            name: spec.name.clone(),
            out: read(&out_log)?,
            err: read(&err_log)?,
            out_log: out_log.display().to_string(),
            err_log: err_log.display().to_string(),
        })
    }

    /// The log files of a process, for the live stream.
    pub fn log_paths(&self, target: &Target) -> Result<(u64, PathBuf, PathBuf), ServiceError> {
        let id = self.resolve_one(target)?;
        let spec = self
            .store
            .get(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("no process {id}")))?;
        Ok((
            id,
            self.home.out_log(&spec.name, id),
            self.home.err_log(&spec.name, id),
        ))
    }
}
